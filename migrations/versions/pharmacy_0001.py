"""pharmacy: delivery partners, deliveries and their events, SMS notifications

Revision ID: pharmacy_0001
Revises: jobs_0001
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'pharmacy_0001'
down_revision = 'jobs_0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('delivery_partners',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('license_no', sa.String(length=64), nullable=False),
    sa.Column('license_valid_until', sa.Date(), nullable=False),
    sa.Column('regions', sa.JSON(), nullable=False),
    sa.Column('cold_chain', sa.Boolean(), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('endpoint', sa.String(length=500), nullable=False),
    sa.Column('secret', sa.LargeBinary(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_partners')),
    sa.UniqueConstraint('name', name=op.f('uq_delivery_partners_name'))
    )
    op.create_table('notifications',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('subject_type', sa.String(length=32), nullable=False),
    sa.Column('subject_id', sa.Uuid(), nullable=False),
    sa.Column('to_phone', sa.LargeBinary(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('provider_ref', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_subject_id'), ['subject_id'], unique=False)
    op.create_table('deliveries',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('prescription_id', sa.Uuid(), nullable=False),
    sa.Column('partner_id', sa.Uuid(), nullable=True),
    sa.Column('status', sa.Enum('routed', 'dispatched', 'out_for_delivery', 'delivered', 'failed', 'collect_at_pharmacy', 'returned', name='deliverystatus', native_enum=False, length=24), nullable=False),
    sa.Column('recipient_name', sa.LargeBinary(), nullable=False),
    sa.Column('recipient_phone', sa.LargeBinary(), nullable=False),
    sa.Column('address', sa.LargeBinary(), nullable=False),
    sa.Column('region_code', sa.String(length=12), nullable=False),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.Column('tried_partner_ids', sa.JSON(), nullable=False),
    sa.Column('routing', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['delivery_partners.id'], name=op.f('fk_deliveries_partner_id_delivery_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries')),
    sa.UniqueConstraint('prescription_id', name=op.f('uq_deliveries_prescription_id'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deliveries_partner_id'), ['partner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_status'), ['status'], unique=False)
    op.create_table('delivery_events',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('delivery_id', sa.Uuid(), nullable=False),
    sa.Column('partner_id', sa.Uuid(), nullable=True),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('raw', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivery_events_delivery_id_deliveries')),
    sa.ForeignKeyConstraint(['partner_id'], ['delivery_partners.id'], name=op.f('fk_delivery_events_partner_id_delivery_partners')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_events')),
    sa.UniqueConstraint('partner_id', 'event_id', name='uq_delivery_events_partner_event')
    )
    with op.batch_alter_table('delivery_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_delivery_events_delivery_id'), ['delivery_id'], unique=False)


def downgrade():
    with op.batch_alter_table('delivery_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_delivery_events_delivery_id'))

    op.drop_table('delivery_events')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_status'))
        batch_op.drop_index(batch_op.f('ix_deliveries_partner_id'))

    op.drop_table('deliveries')
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_subject_id'))

    op.drop_table('notifications')
    op.drop_table('delivery_partners')

