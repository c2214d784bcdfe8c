"""Create or update the periodic tasks the applications declare."""

from django.core.management.base import BaseCommand

from portal.schedules import schedules_ensure


class Command(BaseCommand):
    """Make the django-q schedules match what each application declares under the settings."""

    help = ("Create or update the periodic tasks (reconcile, collection, scheduled snapshots) "
            "from the current settings; safe to run again.")

    def handle(self, *args: object, **options: object) -> None:
        """Ensure the schedules and say what changed."""
        outcome = schedules_ensure()
        for what in ("created", "updated", "unchanged"):
            if outcome[what] and (what != "unchanged" or int(options["verbosity"]) > 1):
                self.stdout.write(f"Schedules {what}: {', '.join(outcome[what])}")
        if not outcome["created"] and not outcome["updated"]:
            self.stdout.write("Schedules are up to date.")
