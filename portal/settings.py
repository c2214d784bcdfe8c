"""Settings of the portal, read from the environment with safe defaults for the demo."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

from core.ldap_config import ldap_settings

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

VAR_DIR = Path(env.str("PORTAL_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _demo_secret_key() -> str:
    """Return a secret key kept under var/, made once, for machines without one set."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or _demo_secret_key()
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "crispy_forms",
    "crispy_bootstrap5",
    "django_tables2",
    "django_q",
    "axes",
    "csp",
    "rules",
    "django_filters",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "core.accounts",
    "portal",
    "hosts",
    "networking",
    "operations",
    "vms",
    "monitoring",
    "console",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "portal.middleware.NoStoreForSignedInMiddleware",
    # Last: turns a login refused by the throttle into the login page saying so.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web and the workers read while one of them writes; IMMEDIATE takes the
    # write lock at BEGIN so two writers queue instead of failing with "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Directory login when LDAP_SERVER_URI is set; local accounts always work after it.
# The login throttle (django-axes, the first backend there) sees every login: local,
# break-glass and directory.
vars().update(ldap_settings(env.ENVIRON))
# After PORTAL_LOGIN_FAILURE_LIMIT failed logins for one account, or from one address, further
# logins there are refused for PORTAL_LOGIN_COOLOFF_MINUTES (each new failure restarts it).
AXES_ENABLED = env.bool("PORTAL_LOGIN_THROTTLE", default=True)
AXES_FAILURE_LIMIT = env.int("PORTAL_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("PORTAL_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# A success clears nothing: it would also clear the address's failures against other accounts.
AXES_RESET_ON_SUCCESS = False
AXES_LOCKOUT_CALLABLE = "core.auth.lockout_response"
AXES_USERNAME_CALLABLE = "core.accounts.backends.throttle_username"
# Behind reverse proxies the client's address is the PORTAL_PROXY_COUNT-th from the right of
# X-Forwarded-For; 0 (the demo, served directly) takes the connection's address.
PORTAL_PROXY_COUNT = env.int("PORTAL_PROXY_COUNT", default=0)
AXES_CLIENT_IP_CALLABLE = "core.auth.client_address"
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 3600)

LANGUAGE_CODE = "en-gb"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
_NODE = BASE_DIR / "node_modules"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/bootstrap", _NODE / "bootstrap" / "dist"),
    ("vendor/bootstrap-icons", _NODE / "bootstrap-icons" / "font"),
    ("vendor/htmx", _NODE / "htmx.org" / "dist"),
    # noVNC as ES modules: core/ imports ../vendor/pako, so both keep their relative places.
    ("vendor/novnc/core", _NODE / "@novnc" / "novnc" / "core"),
    ("vendor/novnc/vendor", _NODE / "@novnc" / "novnc" / "vendor"),
    ("vendor/xterm/lib", _NODE / "@xterm" / "xterm" / "lib"),
    ("vendor/xterm/css", _NODE / "@xterm" / "xterm" / "css"),
    ("vendor/xterm-addon-fit", _NODE / "@xterm" / "addon-fit" / "lib"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"
DJANGO_TABLES2_TEMPLATE = "django_tables2/bootstrap5-responsive.html"

vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="portal@localhost")
PORTAL_BASE_URL = env.str("PORTAL_BASE_URL", default="http://127.0.0.1:8000")

# HTTPS-only cookies, redirects and HSTS: on in production (DJANGO_HTTPS=1), off for the
# demo, which is served over plain HTTP on localhost.
SECURE = env.bool("DJANGO_HTTPS", default=False)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Content-Security-Policy (django-csp): scripts and styles only from the portal's own files,
# never inline. The console pages add their proxy's websocket origin to connect-src, and the
# serial console a nonce for the <style> elements xterm.js makes (console.views).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        # The nonce appears only on pages that use it (the serial console).
        "style-src": ["'self'", NONCE],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
        "base-uri": ["'self'"],
        "object-src": ["'none'"],
    },
}

# Task queue: django-q2 carries only Operation ids; the portal owns retries (max_attempts 1).
REDIS_URL = env.str("REDIS_URL", default="")
OPERATION_TIMEOUT = env.int("PORTAL_OPERATION_TIMEOUT", default=900)
Q_CLUSTER: dict = {
    "name": "portal",
    "workers": env.int("PORTAL_WORKERS", default=2),
    "timeout": OPERATION_TIMEOUT,
    "retry": OPERATION_TIMEOUT + 60,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 500,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["poll"] = 1
    # The ORM broker redelivers a task whose worker was killed (timeout guard) every `retry`
    # seconds, forever; this one counts deliveries and gives a task up after the limit.
    Q_CLUSTER["broker_class"] = "core.broker.BoundedORM"
# How many times a task is handed to a worker at most (the ORM broker's redeliveries).
TASK_MAX_DELIVERIES = env.int("PORTAL_TASK_MAX_DELIVERIES", default=3)

# The portal's own limits.
PORTAL = {
    "MAX_VCPUS": env.int("PORTAL_MAX_VCPUS", default=16),
    "MAX_MEMORY_MIB": env.int("PORTAL_MAX_MEMORY_MIB", default=65536),
    "MAX_DISK_GIB": env.int("PORTAL_MAX_DISK_GIB", default=500),
    "SHUTDOWN_TIMEOUT": env.int("PORTAL_SHUTDOWN_TIMEOUT", default=120),
    # A task the Redis broker lost with its cluster comes back after at most about
    # QUEUED_STALE_AFTER (queued) or HEARTBEAT_STALE_AFTER (running) plus one reconcile period.
    "QUEUED_STALE_AFTER": env.int("PORTAL_QUEUED_STALE_AFTER", default=120),
    "RECONCILE_EVERY_MINUTES": env.int("PORTAL_RECONCILE_EVERY_MINUTES", default=2),
    # A running operation's worker beats every HEARTBEAT_EVERY s; the reconciler fails it
    # when no beat came for HEARTBEAT_STALE_AFTER s (or it outlived PORTAL_OPERATION_TIMEOUT).
    "HEARTBEAT_EVERY": env.float("PORTAL_HEARTBEAT_EVERY", default=10.0),
    "HEARTBEAT_STALE_AFTER": env.int("PORTAL_HEARTBEAT_STALE_AFTER", default=60),
    # Admins get at most one mail about failed operations per this many minutes.
    "ALERT_DIGEST_MINUTES": env.int("PORTAL_ALERT_DIGEST_MINUTES", default=15),
    "VNC_PORTS": tuple(int(p) for p in env.str("PORTAL_VNC_PORTS", default="5900-6899")
                       .split("-", 1)),
    "MAX_RANGE": env.int("PORTAL_MAX_RANGE", default=4096),
    "MAX_SNAPSHOTS": env.int("PORTAL_MAX_SNAPSHOTS", default=3),
    # Whole-cloud bootup: how long to wait for a host's health check to pass, and for a VM's
    # operation under way when a shutdown was asked for (seconds); how often to look again.
    "CLOUD_BOOT_WAIT": env.int("PORTAL_CLOUD_BOOT_WAIT", default=600),
    "CLOUD_VM_WAIT": env.int("PORTAL_CLOUD_VM_WAIT", default=300),
    "CLOUD_POLL": env.float("PORTAL_CLOUD_POLL", default=5.0),
    # A shutdown or bootup run stops this long before the workers' time limit and queues
    # its next part, which continues from the record.
    "CLOUD_TIME_MARGIN": env.int("PORTAL_CLOUD_TIME_MARGIN", default=180),
    "MAX_CLONES": env.int("PORTAL_MAX_CLONES", default=5),
    "MAX_EXTRA_DISK_GIB": env.int("PORTAL_MAX_EXTRA_DISK_GIB", default=200),
    "MAX_EXTRA_DISKS": env.int("PORTAL_MAX_EXTRA_DISKS", default=4),
    # Operations running at once on one host; more wait, queued, for a slot. 0: the workers
    # less one when more than one host is up (a hung host never holds every worker), else all.
    "HOST_MAX_OPERATIONS": env.int("PORTAL_HOST_MAX_OPERATIONS", default=0),
    # When the health check marks a host down and its power method can fence it (IPMI or
    # SSH), respawn its VMs on other hosts at once (vms.services.respawn).
    "RESPAWN_AUTOMATIC": env.bool("PORTAL_RESPAWN_AUTOMATIC", default=False),
    # VMs an evacuation moves at once, in the threads of its own worker (not the queue's).
    "EVACUATE_PARALLEL": env.int("PORTAL_EVACUATE_PARALLEL", default=2),
}

# Datastores must lie under one of these directories (colon- or comma-separated, absolute):
# an admin cannot point a storage pool at /etc. The demo's datastore is VAR_DIR/datastore.
PORTAL_DATASTORE_ROOTS = tuple(
    root.strip() for root in env.str(
        "PORTAL_DATASTORE_ROOTS", default=f"{VAR_DIR / 'datastore'}:/var/lib/libvirt/images"
    ).replace(",", ":").split(":") if root.strip()
)
if not all(root.startswith("/") for root in PORTAL_DATASTORE_ROOTS):
    raise ImproperlyConfigured(
        f"PORTAL_DATASTORE_ROOTS must hold absolute paths, not {PORTAL_DATASTORE_ROOTS}")

# DHCP host entries: "libvirt" (the host's libvirt network), "isc-ssh" (an ISC dhcpd over
# SSH) or "none".
PORTAL_DHCP = {
    "BACKEND": env.str("PORTAL_DHCP_BACKEND", default="libvirt"),
    "ADDRESS": env.str("PORTAL_DHCP_SSH_ADDRESS", default=""),
    "PORT": env.int("PORTAL_DHCP_SSH_PORT", default=22),
    "USERNAME": env.str("PORTAL_DHCP_SSH_USER", default="root"),
    "HOST_KEY": env.str("PORTAL_DHCP_SSH_HOST_KEY", default=""),
    "KEY_FILE": env.str("PORTAL_DHCP_SSH_KEY_FILE", default=""),
    "CONFIG_DIR": env.str("PORTAL_DHCP_CONFIG_DIR", default="/etc/dhcp/portal.d"),
    "RELOAD": env.list("PORTAL_DHCP_RELOAD",
                       default=["systemctl", "restart", "isc-dhcp-server"]),
}
# NAT of public IPs: "none" (no NAT box) or "iptables-ssh".
PORTAL_NAT = {
    "BACKEND": env.str("PORTAL_NAT_BACKEND", default="none"),
    "ADDRESS": env.str("PORTAL_NAT_SSH_ADDRESS", default=""),
    "PORT": env.int("PORTAL_NAT_SSH_PORT", default=22),
    "USERNAME": env.str("PORTAL_NAT_SSH_USER", default="root"),
    "HOST_KEY": env.str("PORTAL_NAT_SSH_HOST_KEY", default=""),
    "KEY_FILE": env.str("PORTAL_NAT_SSH_KEY_FILE", default=""),
    "INTERFACE": env.str("PORTAL_NAT_INTERFACE", default="eth0"),
    # Forwarded SSH ports of VMs without a public IP: TCP ports "first-last" of this address
    # (by default PORTAL_NAT_SSH_ADDRESS when that is an IPv4 address; none: not offered).
    # Checked by networking's system check.
    "PUBLIC_ADDRESS": env.str("PORTAL_NAT_PUBLIC_ADDRESS", default=""),
    "FORWARD_PORTS": env.str("PORTAL_NAT_FORWARD_PORTS", default="10000-15000"),
}

# Monitoring: one RRD file per VM and per host; rrdcached when RRDCACHED_ADDRESS is set.
PORTAL_MONITOR = {
    "RRD_DIR": env.str("PORTAL_RRD_DIR", default=str(VAR_DIR / "rrd")),
    "RRDCACHED_ADDRESS": env.str("RRDCACHED_ADDRESS", default=""),
    "PERIOD": env.int("PORTAL_MONITOR_PERIOD", default=300),
    "SSH_KEY_FILE": env.str("PORTAL_SSH_KEY_FILE", default=""),
}
# Host health (`hosts.health_check`): every EVERY_MINUTES each host is checked; an up host
# failing FAILS_BEFORE_DOWN checks in a row is marked down and admins are mailed once.
PORTAL_HOST_HEALTH = {
    "EVERY_MINUTES": env.int("PORTAL_HOST_HEALTH_EVERY_MINUTES", default=5),
    "FAILS_BEFORE_DOWN": env.int("PORTAL_HOST_HEALTH_FAILS_BEFORE_DOWN", default=3),
    "MIN_FREE_GIB": env.int("PORTAL_HOST_HEALTH_MIN_FREE_GIB", default=10),
    "REACH_TIMEOUT": env.float("PORTAL_HOST_HEALTH_REACH_TIMEOUT", default=5.0),
}
# Browser console: `manage.py console_proxy` relays websockets to VNC and serial consoles.
PORTAL_CONSOLE_LISTEN = env.str("PORTAL_CONSOLE_LISTEN", default="127.0.0.1:6080")
# The ws:// or wss:// URL browsers reach the proxy at; empty: the page's host on the proxy's port.
PORTAL_CONSOLE_URL = env.str("PORTAL_CONSOLE_URL", default="")
# Pages allowed to open consoles; empty: this site's own origins (ALLOWED_HOSTS, base URL).
PORTAL_CONSOLE_ALLOWED_ORIGINS = env.list("PORTAL_CONSOLE_ALLOWED_ORIGINS", default=[])
PORTAL_CONSOLE_TOKEN_SECONDS = env.int("PORTAL_CONSOLE_TOKEN_SECONDS", default=30)
PORTAL_CONSOLE_IDLE_SECONDS = env.int("PORTAL_CONSOLE_IDLE_SECONDS", default=900)
PORTAL_CONSOLE_MAX_SECONDS = env.int("PORTAL_CONSOLE_MAX_SECONDS", default=8 * 3600)
PORTAL_CONSOLE_PER_TOKEN = env.int("PORTAL_CONSOLE_PER_TOKEN", default=1)
PORTAL_CONSOLE_PER_USER = env.int("PORTAL_CONSOLE_PER_USER", default=4)
# The websocket must carry the session cookie of the token's user (the proxy shares the site's
# host name); turn off only when the proxy has a host name of its own.
PORTAL_CONSOLE_SAME_SESSION = env.bool("PORTAL_CONSOLE_SAME_SESSION", default=True)

# The REST API (/api/v1/): personal tokens or the session (with CSRF), the pages' permissions,
# cursor pages of 50, JSON errors, and PORTAL_API_RATE calls per token (or session) at most.
PORTAL_API_RATE = env.str("PORTAL_API_RATE", default="1200/minute")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["api.authentication.TokenAuthentication",
                                       "rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.PortalUser"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.TokenRateThrottle"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.PortalCursorPagination",
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.URLPathVersioning",
    "ALLOWED_VERSIONS": ["v1"],
    "DEFAULT_VERSION": "v1",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser",
                               "rest_framework.parsers.FormParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "VM portal API",
    "DESCRIPTION": "Request, approve and operate VMs with the same rules as the pages. "
                   "Authenticate with a personal token: Authorization: Bearer vmp_...",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "api.schema.add_error_responses"],
    "ENUM_NAME_OVERRIDES": {
        "VMStateEnum": "vms.models.VMState", "RequestStageEnum": "vms.models.RequestStage",
        "RequestKindEnum": "vms.models.RequestKind",
        "OperationKindEnum": "operations.models.OperationKind",
        "OperationStatusEnum": "operations.models.OperationStatus",
        "SnapshotKindEnum": "vms.models.SnapshotKind",
        "SnapshotStateEnum": "vms.models.SnapshotState",
    },
}

CACHES = {
    "default": (env.cache_url("CACHE_URL") if env.str("CACHE_URL", default="")
                else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # axes.apps says "BEGIN" at every start of every command; its lockouts still log.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes.apps": {"level": "WARNING"}},
}
