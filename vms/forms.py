"""Forms of the VMs application: they parse; services decide."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from core.accounts.directory import directory_enabled, directory_user_fetch
from core.accounts.models import Role, SSHKey, User
from core.validators import FreeTextValidator
from hosts.models import NAME_VALIDATOR, Template
from networking.models import SecurityDomain
from networking.services import security_domains_for

from .models import RequestKind, RequestStage, VirtualMachine
from .selectors import faculty_choices, name_in_use
from .services.sizes import change_bounds, size_bounds, vm_sizes_validate
from .services.workflow import NAME_TAKEN, vm_change_params_errors

SIZE_FIELDS = ("vcpus", "memory_mib", "disk_gib")


class FacultyChoiceField(forms.ModelChoiceField):
    """Show faculty by full name and username."""

    def label_from_instance(self, obj: User) -> str:
        return str(obj)


class SSHKeyChoiceField(forms.ModelMultipleChoiceField):
    """Show keys by name, type and fingerprint (escaped where rendered)."""

    def label_from_instance(self, obj: SSHKey) -> str:
        return f"{obj.name} · {obj.key_type} · {obj.fingerprint}"


def text_refusals(form: forms.Form) -> str:
    """Return what the form's free-text fields refused, as one message ('' if nothing)."""
    return " ".join(error.message for errors in form.errors.as_data().values()
                    for error in errors if error.code == FreeTextValidator.code)


def bound_number_inputs(form: forms.Form, bounds: dict[str, tuple[int, int]]) -> None:
    """Give the form's number inputs min, max and step from the bounds; the server still checks."""
    for name, (lowest, highest) in bounds.items():
        if name in form.fields:
            form.fields[name].widget.attrs.update({"min": lowest, "max": highest, "step": 1})


def add_errors(form: forms.Form, errors: dict[str | None, str | list[str]]) -> None:
    """Add a check's errors to the form, except on fields that already have one."""
    for field, message in errors.items():
        if field is not None and field not in form.fields:
            field = None
        if field is None or field not in form.errors:
            form.add_error(field, message)


def resolve_faculty(username: str, *, requester: User) -> User | None:
    """Return the faculty of the requester's organisation with this username, if any."""
    person = faculty_choices(requester=requester).filter(username=username).first()
    if person is None and directory_enabled():
        fetched = directory_user_fetch(username)
        if fetched is not None:
            person = faculty_choices(requester=requester).filter(pk=fetched.pk).first()
    return person


class VMRequestForm(forms.Form):
    """What a requester fills in to ask for a VM."""

    name = forms.CharField(
        max_length=63, validators=[NAME_VALIDATOR],
        help_text="Lower-case letters, digits and hyphens, starting with a letter.",
        widget=forms.TextInput(attrs={"autofocus": True, "placeholder": "e.g. thesis-lab"}),
    )
    template = forms.ModelChoiceField(queryset=Template.objects.filter(is_active=True),
                                      empty_label=None)
    vcpus = forms.IntegerField(label="vCPUs", min_value=1, initial=1)
    memory_mib = forms.IntegerField(label="RAM (MiB)", min_value=64, initial=512)
    disk_gib = forms.IntegerField(label="Disk (GiB)", min_value=1, initial=2)
    purpose = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                              validators=[FreeTextValidator("purpose", multiline=True)],
                              help_text="What the VM is for; approvers read this.")
    security_domain = forms.ModelChoiceField(
        queryset=SecurityDomain.objects.none(), empty_label=None,
        help_text="The network zone the VM joins; it gets an address on its VLAN.",
    )
    public_ip = forms.BooleanField(
        label="Also give it a public IP address", required=False,
        help_text="Reachable from outside the campus through NAT.",
    )
    faculty = FacultyChoiceField(queryset=User.objects.none(), required=False,
                                 help_text="The faculty member who approves first.")
    faculty_username = forms.CharField(
        label="…or find them by name", required=False, max_length=150,
        help_text="Type a name or username; faculty of your organisation are suggested.",
        widget=forms.TextInput(attrs={"list": "faculty-suggestions", "autocomplete": "off"}),
    )
    ssh_keys = SSHKeyChoiceField(
        label="SSH keys", queryset=SSHKey.objects.none(), required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Your keys the VM's user accepts; manage them under SSH keys in your menu.")
    generate_password = forms.BooleanField(
        label="Generate a password", required=False,
        help_text="Shown to you once on the VM's page; only its hash is kept.")

    def __init__(self, *args: object, requester: User, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.requester = requester
        self.fields["security_domain"].queryset = security_domains_for(requester)
        keys = SSHKey.objects.visible_to(requester)
        self.fields["ssh_keys"].queryset = keys
        newest = keys.first()
        self.fields["ssh_keys"].initial = [newest.pk] if newest else []
        # Without a key, a password is the only way in: offer it unless they untick it.
        self.fields["generate_password"].initial = newest is None
        chosen = self.chosen_template()
        if chosen is not None:
            bound_number_inputs(self, size_bounds(chosen))
        if requester.role == Role.USER:
            self.fields["faculty"].queryset = faculty_choices(requester=requester)
        else:
            del self.fields["faculty"]
            del self.fields["faculty_username"]

    def chosen_template(self) -> Template | None:
        """Return the template whose bounds the size inputs show: the one chosen, else the first."""
        offered = self.fields["template"].queryset
        chosen = self.data.get("template") if self.is_bound else self.initial.get("template")
        chosen = getattr(chosen, "pk", chosen)
        found = None
        if chosen not in (None, ""):
            try:
                found = offered.filter(pk=int(chosen)).first()
            except (TypeError, ValueError):
                found = None
        return found or offered.first()

    def clean(self) -> dict:
        """Check everything at once: faculty, credentials, name and the template's bounds."""
        data = super().clean()
        username = (data.get("faculty_username") or "").strip()
        if "faculty_username" in self.fields and username:
            person = resolve_faculty(username, requester=self.requester)
            if person is None:
                self.add_error("faculty_username",
                               "No faculty member of your organisation has that username.")
            else:
                data["faculty"] = person
        elif "faculty" in self.fields and data.get("faculty") is None \
                and "faculty" not in self.errors:
            self.add_error("faculty", "Choose the faculty who will approve this request.")
        template = data.get("template")
        if template is not None and not template.cloud_init:
            for name in ("ssh_keys", "generate_password"):
                if data.get(name):
                    self.add_error(name, f"Template {template.name} does not take cloud-init, "
                                         "so it cannot be given SSH keys or a password.")
        if template is not None:
            # The service checks the sizes again; checking them here too means a size out of
            # bounds shows in the same round as every other error, not after they are fixed.
            try:
                vm_sizes_validate(template=template,
                                  **{name: data.get(name) for name in SIZE_FIELDS})
            except ValidationError as exc:
                add_errors(self, {k: v[0] for k, v in exc.message_dict.items()})
        if data.get("name") and "name" not in self.errors and name_in_use(data["name"]):
            self.add_error("name", NAME_TAKEN)
        return data

    def cloud_init_templates(self) -> list[int]:
        """Return the ids of offered templates that take keys and a password."""
        return [t.pk for t in self.fields["template"].queryset if t.cloud_init]

    def template_bounds(self) -> list[tuple[Template, dict[str, tuple[int, int]]]]:
        """Return each offered template with the sizes it allows, for the page to show."""
        return [(t, size_bounds(t)) for t in self.fields["template"].queryset]

    def template_bounds_by_id(self) -> dict[int, dict[str, tuple[int, int]]]:
        """Return the sizes each offered template allows, by id, for the inputs to follow."""
        return {t.pk: b for t, b in self.template_bounds()}


class DecisionForm(forms.Form):
    """An approver's reason, and the stage they saw, so a stale page changes nothing."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False,
                             max_length=2000,
                             validators=[FreeTextValidator("reason", multiline=True)])
    seen_stage = forms.ChoiceField(choices=RequestStage.choices, widget=forms.HiddenInput)


class VMChangeForm(forms.Form):
    """A change to an existing VM, asked of the same approvers as a new one."""

    security_domain = forms.ModelChoiceField(queryset=SecurityDomain.objects.none(),
                                             empty_label=None, label="Move to")
    vcpus = forms.IntegerField(label="vCPUs", min_value=1)
    memory_mib = forms.IntegerField(label="RAM (MiB)", min_value=64)
    size_gib = forms.IntegerField(label="Size (GiB)", min_value=1)
    count = forms.IntegerField(label="Copies", min_value=1, initial=1)
    purpose = forms.CharField(label="Why", widget=forms.Textarea(attrs={"rows": 2}),
                              max_length=2000,
                              validators=[FreeTextValidator("reason", multiline=True)])
    faculty = FacultyChoiceField(queryset=User.objects.none(), required=False,
                                 help_text="The faculty member who approves first.")

    def __init__(self, *args: object, requester: User, vm: VirtualMachine, kind: RequestKind,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind
        self.vm = vm
        if kind == RequestKind.NETWORK:
            self.fields["security_domain"].queryset = security_domains_for(vm.owner).exclude(
                pk=vm.security_domain_id)
        else:
            del self.fields["security_domain"]
        keep = {RequestKind.RESIZE: ("vcpus", "memory_mib"), RequestKind.DISK: ("size_gib",),
                RequestKind.CLONE: ("count",)}.get(kind, ())
        for name in ("vcpus", "memory_mib", "size_gib", "count"):
            if name not in keep:
                del self.fields[name]
        if kind == RequestKind.RESIZE:
            self.fields["vcpus"].initial = vm.vcpus
            self.fields["memory_mib"].initial = vm.memory_mib
        if keep:
            bound_number_inputs(self, change_bounds(vm.template))
        if requester.role == Role.USER:
            self.fields["faculty"].queryset = faculty_choices(requester=requester)
            self.fields["faculty"].required = True
            if vm.request and vm.request.faculty_id:
                self.fields["faculty"].initial = vm.request.faculty_id
        else:
            del self.fields["faculty"]

    def clean(self) -> dict:
        """Check the sizes or copies asked for with the other fields, so errors show at once."""
        data = super().clean()
        if self.kind in (RequestKind.RESIZE, RequestKind.DISK, RequestKind.CLONE):
            params = {name: data.get(name) for name in ("vcpus", "memory_mib", "size_gib", "count")
                      if name in self.fields}
            add_errors(self, vm_change_params_errors(vm=self.vm, kind=self.kind, params=params))
        return data


class SnapshotForm(forms.Form):
    """A snapshot's name and description, the owner's words."""

    name = forms.CharField(max_length=64, validators=[FreeTextValidator("name")])
    description = forms.CharField(max_length=500, required=False,
                                  widget=forms.Textarea(attrs={"rows": 2}),
                                  validators=[FreeTextValidator("description", multiline=True)])


class ScheduleForm(forms.Form):
    """Which snapshot schedules a VM keeps."""

    frequencies = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple,
        choices=[("daily", "Daily"), ("weekly", "Weekly"), ("monthly", "Monthly")])


class TemplateSaveForm(forms.Form):
    """The name of a template made from a VM."""

    name = forms.CharField(max_length=120, validators=[FreeTextValidator("name")])
