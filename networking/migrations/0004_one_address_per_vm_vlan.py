"""One private address per VM and VLAN: free the extra ones a race gave, then constrain."""

from django.db import migrations, models
from django.db.models import Count, F


def free_extra_addresses(apps, schema_editor):
    """Keep, for each VM and VLAN, the address the VM's pages show; give the others back.

    `VirtualMachine.private_ip` shows the newest address (then the highest id), and the NAT
    mapping and SSH port forward follow it, so that is the one kept.
    """
    PrivateIP = apps.get_model("networking", "PrivateIP")
    db = schema_editor.connection.alias
    doubles = (PrivateIP.objects.using(db).filter(vm__isnull=False)
               .values("vm_id", "vlan_id").annotate(n=Count("id")).filter(n__gt=1))
    for pair in doubles:
        rows = list(PrivateIP.objects.using(db)
                    .filter(vm_id=pair["vm_id"], vlan_id=pair["vlan_id"])
                    .order_by(F("allocated_at").desc(nulls_last=True), "-id")
                    .values_list("id", "address"))
        (_, kept), extra = rows[0], rows[1:]
        PrivateIP.objects.using(db).filter(id__in=[pk for pk, _ in extra]).update(
            vm=None, allocated_at=None)
        print(f"\n  VM #{pair['vm_id']} kept {kept} and gave back "
              f"{', '.join(address for _, address in extra)} (one address per VLAN).")


class Migration(migrations.Migration):

    dependencies = [
        ('networking', '0003_ssh_port'),
    ]

    operations = [
        migrations.RunPython(free_extra_addresses, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='privateip',
            constraint=models.UniqueConstraint(condition=models.Q(('vm__isnull', False)), fields=('vm', 'vlan'), name='networking_privateip_one_per_vm_vlan'),
        ),
    ]
