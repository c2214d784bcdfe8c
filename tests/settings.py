"""Settings for the test suite: the portal's own, with tasks run in-process."""

import tempfile
from pathlib import Path

from portal.settings import *  # noqa: F403
from portal.settings import Q_CLUSTER

# Tests never read the demo's collected static files (a collectstatic may be rewriting them).
STATIC_ROOT = Path(tempfile.gettempdir()) / "portal-test-static"
STATIC_ROOT.mkdir(exist_ok=True)

Q_CLUSTER = {**Q_CLUSTER, "sync": True}
# The fast tier's datastores (/srv/portal/..., never created) and the real tiers' temporary
# ones (/var/tmp/portaltest-*, pytest's tmp_path).
PORTAL_DATASTORE_ROOTS = (*PORTAL_DATASTORE_ROOTS, "/srv/portal", "/var/tmp",  # noqa: F405
                          tempfile.gettempdir())
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
