"""face verification of physicians: enrolled faces, lockout state, used-image fingerprints

Revision ID: face_0001
Revises: 6cab0d2f2f50
Create Date: 2026-11-23 04:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'face_0001'
down_revision = '6cab0d2f2f50'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('face_enrollments',
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('encoding', sa.LargeBinary(), nullable=False),
    sa.Column('photo_file', sa.String(length=128), nullable=False),
    sa.Column('photo_media_type', sa.String(length=32), nullable=False),
    sa.Column('photo_sha256', sa.String(length=64), nullable=False),
    sa.Column('enrolled_by', sa.String(length=64), nullable=True),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('consecutive_mismatches', sa.Integer(), nullable=False),
    sa.Column('locked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_verified_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_face_enrollments_account_id_accounts')),
    sa.PrimaryKeyConstraint('account_id', name=op.f('pk_face_enrollments'))
    )
    op.create_table('face_images',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('account_id', sa.Uuid(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('dhash', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], name=op.f('fk_face_images_account_id_accounts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_face_images'))
    )
    with op.batch_alter_table('face_images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_face_images_account_id'), ['account_id'], unique=False)


def downgrade():
    with op.batch_alter_table('face_images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_face_images_account_id'))
    op.drop_table('face_images')
    op.drop_table('face_enrollments')
