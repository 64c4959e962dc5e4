"""pharmacy: who made up a prescription (调配) and who checked and issued it (核对、发药)

Revision ID: pharmacy_0005
Revises: consult_0001
Create Date: 2026-12-02 17:40:00

处方管理办法 第三十七条 (四查十对) and the 处方标准's 后记 ask for the reviewing, the dispensing
and the checking/issuing pharmacists on the prescription. The review row already names the
reviewer; these columns name the other two and when each acted. Prescriptions dispensed
before this revision keep them NULL (nobody recorded who it was): their documents leave
the fields blank, as they always did.
"""

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = "pharmacy_0005"
down_revision = "consult_0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("pharmacy_reviews", schema=None) as batch_op:
        batch_op.add_column(sa.Column("prepared_by", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("prepared_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("checked_by", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_pharmacy_reviews_prepared_by_accounts"), "accounts", ["prepared_by"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_pharmacy_reviews_checked_by_accounts"), "accounts", ["checked_by"], ["id"]
        )


def downgrade():
    with op.batch_alter_table("pharmacy_reviews", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_pharmacy_reviews_checked_by_accounts"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_pharmacy_reviews_prepared_by_accounts"), type_="foreignkey")
        batch_op.drop_column("checked_at")
        batch_op.drop_column("checked_by")
        batch_op.drop_column("prepared_at")
        batch_op.drop_column("prepared_by")
