"""worker: job keys and retry cycles, incident kinds, message buffer, signal subscriptions,
timer-start schedules, SLA clocks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 15:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def _id_column():
    return sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False)


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('retry_cycle', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('created_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=20), nullable=False, server_default='step'))
        batch_op.add_column(sa.Column('job_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('topic', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resolution', sa.String(length=20), nullable=True))

    op.create_table('message_buffer',
    _id_column(),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('correlation', sa.String(length=1000), nullable=False),
    sa.Column('business_key', sa.String(length=200), nullable=True),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=True),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('delivered_at', sa.DateTime(), nullable=True),
    sa.Column('delivered_to', sa.String(length=36), nullable=True),
    sa.Column('expired_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('message_buffer', schema=None) as batch_op:
        batch_op.create_index('ix_message_buffer_match', ['name', 'correlation'], unique=False)
        batch_op.create_index(batch_op.f('ix_message_buffer_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_message_buffer_expires_at'), ['expires_at'], unique=False)

    op.create_table('signal_subscription',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('bpmn_id', sa.String(length=200), nullable=False),
    sa.Column('signal_name', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instance.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('signal_subscription', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signal_subscription_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_signal_subscription_signal_name'), ['signal_name'], unique=False)

    op.create_table('start_schedule',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('definition_key', sa.String(length=200), nullable=False),
    sa.Column('definition_id', sa.Integer(), nullable=False),
    sa.Column('bpmn_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('expression', sa.String(length=400), nullable=False),
    sa.Column('next_due_at', sa.DateTime(), nullable=True),
    sa.Column('cycles_left', sa.Integer(), nullable=False),
    sa.Column('fired_count', sa.Integer(), nullable=False),
    sa.Column('last_fired_at', sa.DateTime(), nullable=True),
    sa.Column('last_instance_id', sa.String(length=36), nullable=True),
    sa.ForeignKeyConstraint(['definition_id'], ['definition.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('definition_key', 'bpmn_id')
    )
    with op.batch_alter_table('start_schedule', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_start_schedule_definition_id'), ['definition_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_start_schedule_next_due_at'), ['next_due_at'], unique=False)

    op.create_table('sla_clock',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('scope', sa.String(length=10), nullable=False),
    sa.Column('definition_key', sa.String(length=200), nullable=False),
    sa.Column('bpmn_id', sa.String(length=200), nullable=False),
    sa.Column('name', sa.String(length=400), nullable=False),
    sa.Column('groups', sa.String(length=1000), nullable=False),
    sa.Column('severity', sa.String(length=40), nullable=True),
    sa.Column('policy_key', sa.String(length=200), nullable=True),
    sa.Column('policy_version', sa.String(length=40), nullable=True),
    sa.Column('mode', sa.String(length=10), nullable=False),
    sa.Column('budget', sa.String(length=40), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('remind_at', sa.DateTime(), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('cap_at', sa.DateTime(), nullable=False),
    sa.Column('paused_at', sa.DateTime(), nullable=True),
    sa.Column('paused_seconds', sa.Integer(), nullable=False),
    sa.Column('paused_working_days', sa.Integer(), nullable=False),
    sa.Column('pauses', sa.JSON(), nullable=False),
    sa.Column('at_risk_at', sa.DateTime(), nullable=True),
    sa.Column('breached_at', sa.DateTime(), nullable=True),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('outcome', sa.String(length=10), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instance.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sla_clock', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sla_clock_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_sla_clock_definition_key'), ['definition_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_sla_clock_severity'), ['severity'], unique=False)
        batch_op.create_index('ix_sla_clock_open_due', ['closed_at', 'due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('sla_clock', schema=None) as batch_op:
        batch_op.drop_index('ix_sla_clock_open_due')
        batch_op.drop_index(batch_op.f('ix_sla_clock_severity'))
        batch_op.drop_index(batch_op.f('ix_sla_clock_definition_key'))
        batch_op.drop_index(batch_op.f('ix_sla_clock_instance_id'))
    op.drop_table('sla_clock')
    with op.batch_alter_table('start_schedule', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_start_schedule_next_due_at'))
        batch_op.drop_index(batch_op.f('ix_start_schedule_definition_id'))
    op.drop_table('start_schedule')
    with op.batch_alter_table('signal_subscription', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signal_subscription_signal_name'))
        batch_op.drop_index(batch_op.f('ix_signal_subscription_instance_id'))
    op.drop_table('signal_subscription')
    with op.batch_alter_table('message_buffer', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_buffer_expires_at'))
        batch_op.drop_index(batch_op.f('ix_message_buffer_state'))
        batch_op.drop_index('ix_message_buffer_match')
    op.drop_table('message_buffer')
    with op.batch_alter_table('incident', schema=None) as batch_op:
        batch_op.drop_column('resolution')
        batch_op.drop_column('attempts')
        batch_op.drop_column('topic')
        batch_op.drop_column('job_id')
        batch_op.drop_column('kind')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('created_at')
        batch_op.drop_column('retry_cycle')
        batch_op.drop_column('idempotency_key')
