"""visits: a diagnosis keeps the national clinical edition code (国家临床版 2.0) beside the WHO one

Revision ID: visits_0003
Revises: prescriptions_0005
Create Date: 2026-12-02 14:35:00

`diagnoses.icd10` stays the WHO ICD-10 code the condition catalog and the prescribing
rules read (the national code's WHO category); `icd10_national` keeps the code as the
proof carried it (I10.x00, E11.900, J45.900x001), or NULL for a WHO code.
"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "visits_0003"
down_revision = "prescriptions_0005"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("diagnoses", sa.Column("icd10_national", sa.String(length=16), nullable=True))


def downgrade():
    op.drop_column("diagnoses", "icd10_national")
