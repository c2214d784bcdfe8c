# Operation and AlertDigest move to the operations application with their rows: they leave
# vms' state only; their tables (vms_operation, vms_alertdigest) stay as they are.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('vms', '0008_operation_fencing'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(
                    name='AlertDigest',
                ),
                migrations.DeleteModel(
                    name='Operation',
                ),
            ],
            database_operations=[],
        ),
    ]
