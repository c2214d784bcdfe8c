"""One check of free text: forms, services and the XML builder refuse the same characters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.accounts.forms import OrganisationForm
from core.accounts.models import Organisation
from core.accounts.services import organisation_create, organisation_for_directory
from core.errors import PortalError
from core.validators import (
    FreeTextError,
    FreeTextValidator,
    free_text_check,
    free_text_clean,
    free_text_problem,
)
from hosts.virt import Hypervisor
from hosts.virt.domain_xml import DomainSpec, build_domain_xml
from operations.models import OperationStatus
from tests.vms.test_credentials import installed, read_seed
from tests.vms.test_lifecycle import approved_vm, install, run_pending
from vms.forms import DecisionForm, SnapshotForm, TemplateSaveForm, VMChangeForm, VMRequestForm
from vms.models import ApprovalStep, RequestKind, RequestStage, Snapshot, VirtualMachine, VMRequest
from vms.services.changes import template_save_request
from vms.services.snapshots import snapshot_take
from vms.services.workflow import (
    vm_change_request_create,
    vm_request_approve,
    vm_request_create,
    vm_request_reject,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
BELL = "needs a bell \x07 here"
BELL_PURPOSE = "The purpose contains a control character (U+0007); remove it."
NORMAL_TEXT = [
    "Thèse de Zoë: façade, naïve, Ångström",
    "研究用の仮想マシン 实验 실험",
    "GPU runs 🚀 with family 👩\u200d👩\u200d👧 and flags 🇮🇳",
    "שלום \u200fעולם\u200e and مرحبا",
    "tabs\tand spaces",
]


# --- the check itself --------------------------------------------------------------------

@pytest.mark.parametrize(("text", "found"), [
    ("bell\x07", "a control character (U+0007)"),
    ("nul\x00", "a control character (U+0000)"),
    ("escape\x1b[31m", "a control character (U+001B)"),
    ("vertical\x0btab", "a control character (U+000B)"),
    ("del\x7f", "a control character (U+007F)"),
    ("next line\x85", "a control character (U+0085)"),
    ("csi\x9b", "a control character (U+009B)"),
    ("lone \ud800 surrogate", "an unpaired surrogate (U+D800)"),
    ("not \ufffe text", "a noncharacter (U+FFFE)"),
    ("not \U0010ffff text", "a noncharacter (U+10FFFF)"),
    ("admin\u202e gnp.exe", "a text-direction control character (U+202E)"),
    ("isolate \u2066x\u2069", "a text-direction control character (U+2066)"),
])
def test_controls_are_refused_in_every_field(text: str, found: str) -> None:
    for multiline in (False, True):
        assert free_text_problem(text, what="purpose", multiline=multiline) == (
            f"The purpose contains {found}; remove it.")


@pytest.mark.parametrize(("text", "found"), [
    ("two\nlines", "a line break (U+000A)"),
    ("two\r\nlines", "a line break (U+000D)"),
    ("para\u2029graph", "a line break (U+2029)"),
    ("a\ttab", "a tab (U+0009)"),
])
def test_single_line_fields_refuse_line_breaks_and_tabs_multi_line_ones_keep_them(
        text: str, found: str) -> None:
    assert free_text_problem(text, what="name") == f"The name contains {found}; remove it."
    assert free_text_problem(text, what="purpose", multiline=True) is None


@pytest.mark.parametrize("text", NORMAL_TEXT)
def test_ordinary_unicode_is_accepted(text: str) -> None:
    assert free_text_problem(text.replace("\t", " "), what="name") is None
    assert free_text_problem(f"{text}\r\nsecond line\n", what="purpose", multiline=True) is None


def test_the_first_refused_character_is_named() -> None:
    assert "(U+0001)" in free_text_problem("a\x01b\x02", what="reason", multiline=True)


def test_the_plain_check_raises_an_error_that_is_both_a_value_and_a_portal_error() -> None:
    with pytest.raises(FreeTextError, match=r"^The reason contains a control character"):
        free_text_check("x\x07", what="reason")
    assert issubclass(FreeTextError, ValueError) and issubclass(FreeTextError, PortalError)
    with pytest.raises(FreeTextError, match="must be text, not int"):
        free_text_check(7, what="reason")
    assert free_text_check("fine", what="reason") == "fine"


def test_clean_drops_what_is_refused_and_turns_single_line_breaks_into_spaces() -> None:
    assert free_text_clean("Ada\tLove\x07lace\u202e\nKing") == "Ada Lovelace King"
    assert free_text_clean("one\x00\ntwo\x9b", multiline=True) == "one\ntwo"
    assert free_text_clean(NORMAL_TEXT[2]) == NORMAL_TEXT[2]


def test_the_django_validator_refuses_with_the_same_sentence_and_deconstructs() -> None:
    validator = FreeTextValidator("purpose", multiline=True)
    with pytest.raises(ValidationError) as exc:
        validator(BELL)
    assert exc.value.messages == [BELL_PURPOSE] and exc.value.code == "free_text"
    validator("two\nlines")
    with pytest.raises(ValidationError):
        FreeTextValidator("name")("two\nlines")
    assert validator.deconstruct() == ("core.validators.FreeTextValidator", ("purpose",),
                                       {"multiline": True})
    assert validator == FreeTextValidator("purpose", multiline=True) != FreeTextValidator("x")


def test_the_xml_builder_and_the_check_import_no_django() -> None:
    code = ("import sys, hosts.virt.domain_xml, core.validators; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == "[]"


# --- forms ---------------------------------------------------------------------------------

def _errors(form) -> list[str]:
    assert not form.is_valid()
    return [m for messages in form.errors.values() for m in messages]


@pytest.mark.django_db
def test_every_form_with_free_text_refuses_a_control_character(
        site, django_capture_on_commit_callbacks) -> None:
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    request_form = VMRequestForm(
        {"name": "web-lab", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
         "disk_gib": 2, "purpose": BELL, "faculty": site.faculty.pk,
         "security_domain": site.domain.pk}, requester=site.student)
    assert _errors(request_form) == [BELL_PURPOSE]
    change_form = VMChangeForm({"vcpus": 2, "memory_mib": 1024, "purpose": BELL},
                               requester=site.admin, vm=vm, kind=RequestKind.RESIZE)
    assert _errors(change_form) == [BELL_PURPOSE.replace("purpose", "reason")]
    decision = DecisionForm({"reason": "ok\x1b", "seen_stage": RequestStage.FACULTY})
    assert _errors(decision) == [
        "The reason contains a control character (U+001B); remove it."]
    snapshot = SnapshotForm({"name": "before\nupgrade", "description": "x\u202ey"})
    assert sorted(_errors(snapshot)) == [
        "The description contains a text-direction control character (U+202E); remove it.",
        "The name contains a line break (U+000A); remove it.",
    ]
    assert _errors(TemplateSaveForm({"name": "ba\x1fse"})) == [
        "The name contains a control character (U+001F); remove it."]
    assert _errors(OrganisationForm({"name": "Physics\x07"})) == [
        "The name contains a control character (U+0007); remove it."]


@pytest.mark.django_db
def test_forms_accept_ordinary_unicode_and_newlines_in_text_areas(site) -> None:
    for text in NORMAL_TEXT:
        form = SnapshotForm({"name": text.replace("\t", " "),
                             "description": f"{text}\r\nline two"})
        assert form.is_valid(), form.errors
        assert DecisionForm({"reason": f"{text}\r\nok",
                             "seen_stage": RequestStage.FACULTY}).is_valid()


# --- services ------------------------------------------------------------------------------

def _new_request(site, **overrides) -> VMRequest:
    args = {"requester": site.student, "name": "thesis-lab", "template": site.template,
            "vcpus": 1, "memory_mib": 512, "disk_gib": 2, "purpose": "Thesis",
            "security_domain": site.domain, "faculty": site.faculty}
    args.update(overrides)
    return vm_request_create(**args)


@pytest.mark.django_db
def test_a_request_with_a_control_character_is_refused_and_nothing_is_created(site) -> None:
    with pytest.raises(ValidationError) as exc:
        _new_request(site, purpose=BELL)
    assert exc.value.message_dict == {"purpose": [BELL_PURPOSE]}
    assert not VMRequest.objects.exists() and not ApprovalStep.objects.exists()


@pytest.mark.django_db
def test_ordinary_unicode_and_line_breaks_climb_the_chain(site) -> None:
    purpose = "\r\n".join(NORMAL_TEXT)
    req = _new_request(site, purpose=purpose)
    assert VMRequest.objects.get(pk=req.pk).purpose == purpose
    vm_request_approve(request=req, actor=site.faculty, reason="D'accord ✔\nmerci")
    assert req.steps.filter(reason="D'accord ✔\nmerci").exists()


@pytest.mark.django_db
def test_decisions_with_a_control_character_change_nothing(site) -> None:
    req = _new_request(site)
    for decide in (vm_request_approve, vm_request_reject):
        with pytest.raises(ValidationError) as exc:
            decide(request=req, actor=site.faculty, reason="no\x07")
        assert exc.value.message_dict == {
            "reason": ["The reason contains a control character (U+0007); remove it."]}
    req.refresh_from_db()
    assert req.stage == RequestStage.FACULTY and req.steps.count() == 1


@pytest.mark.django_db
def test_a_change_request_with_a_control_character_is_refused(
        site, django_capture_on_commit_callbacks) -> None:
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    with pytest.raises(ValidationError) as exc:
        vm_change_request_create(requester=site.admin, vm=vm, kind=RequestKind.RESIZE,
                                 purpose="more\x9b", params={"vcpus": 2, "memory_mib": 1024})
    assert exc.value.message_dict["purpose"] == [
        "The reason contains a control character (U+009B); remove it."]
    assert not VMRequest.objects.filter(target=vm).exists()


@pytest.mark.django_db
def test_snapshots_and_templates_with_control_characters_are_refused(
        site, django_capture_on_commit_callbacks) -> None:
    vm, op = install(site, django_capture_on_commit_callbacks)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    with pytest.raises(ValidationError) as exc:
        snapshot_take(vm=vm, actor=site.admin, name="v1\x07", description="ok")
    assert exc.value.message_dict == {
        "name": ["The name contains a control character (U+0007); remove it."]}
    with pytest.raises(ValidationError) as exc:
        snapshot_take(vm=vm, actor=site.admin, name="v1", description="bad \ud800")
    assert exc.value.message_dict == {
        "description": ["The description contains an unpaired surrogate (U+D800); remove it."]}
    assert not Snapshot.objects.exists() and not vm.operations.filter(status="queued").exists()
    with pytest.raises(PortalError, match=r"The name contains a control character \(U\+001B\)"):
        template_save_request(vm=vm, actor=site.admin, name="base\x1b")
    assert not vm.operations.filter(status="queued").exists()


@pytest.mark.django_db
def test_a_snapshot_description_of_several_lines_in_any_script_is_taken(
        site, django_capture_on_commit_callbacks) -> None:
    vm, _ = install(site, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False):
        snap = snapshot_take(vm=vm, actor=site.admin, name="avant la mise à jour ✨",
                             description="第一行\n二行目 🚀")
    op = run_pending(vm)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    snap.refresh_from_db()
    assert snap.description == "第一行\n二行目 🚀" and snap.state == "ready"


@pytest.mark.django_db
def test_organisations_refuse_control_characters_and_the_directory_is_cleaned(site) -> None:
    with pytest.raises(ValidationError) as exc:
        organisation_create(name="Chem\x07istry", actor=site.admin)
    assert exc.value.message_dict == {
        "name": ["The name contains a control character (U+0007); remove it."]}
    assert not Organisation.objects.filter(name__startswith="Chem").exists()
    org = organisation_for_directory("Chem\x07istry\u202e\nDept")
    assert org.name == "Chemistry Dept"


@pytest.mark.django_db
def test_an_owners_full_name_with_controls_is_carried_cleaned_into_the_seed(
        site, django_capture_on_commit_callbacks, monkeypatch) -> None:
    # Names come from the directory or an admin, not from the request: clean, not refuse.
    site.student.first_name, site.student.last_name = "Ada\x07", "Love\tlace\u202e"
    site.student.save()
    uploads, upload = {}, Hypervisor.upload_volume

    def keep(self, pool, volume, data):
        uploads[volume] = data
        return upload(self, pool, volume, data)

    monkeypatch.setattr(Hypervisor, "upload_volume", keep)
    vm, op = installed(site, django_capture_on_commit_callbacks, password=True)
    assert op.status == OperationStatus.SUCCEEDED, op.message
    [user] = yaml.safe_load(read_seed(uploads[vm.seed_volume_name])["user-data"])["users"]
    assert user["gecos"] == "Ada Love lace"


# --- views ---------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_request_page_shows_the_refusal_inline_and_creates_nothing(site) -> None:
    data = {"name": "web-lab", "template": site.template.pk, "vcpus": 1, "memory_mib": 512,
            "disk_gib": 2, "purpose": BELL, "faculty": site.faculty.pk,
            "security_domain": site.domain.pk}
    response = site.client(site.student).post(reverse("vms:request_create"), data)
    assert response.status_code == 200
    body = response.content.decode()
    assert "The purpose contains a control character (U+0007); remove it." in body
    assert not VMRequest.objects.exists()


@pytest.mark.django_db
def test_the_decision_page_says_what_to_remove(site) -> None:
    req = _new_request(site)
    response = site.client(site.faculty).post(
        reverse("vms:request_approve", args=[req.pk]),
        {"reason": "fine\x07", "seen_stage": req.stage}, follow=True)
    assert "The reason contains a control character (U+0007); remove it." in (
        response.content.decode())
    req.refresh_from_db()
    assert req.stage == RequestStage.FACULTY


@pytest.mark.django_db
def test_the_snapshot_and_template_buttons_say_what_to_remove(
        site, django_capture_on_commit_callbacks) -> None:
    vm, _ = install(site, django_capture_on_commit_callbacks)
    client = site.client(site.admin)
    response = client.post(reverse("vms:snapshot_create", args=[vm.pk]),
                           {"name": "v1", "description": "a\x00b"}, follow=True)
    assert "The description contains a control character (U+0000); remove it." in (
        response.content.decode())
    response = client.post(reverse("vms:vm_save_template", args=[vm.pk]),
                           {"name": "base\x07"}, follow=True)
    assert "The name contains a control character (U+0007); remove it." in (
        response.content.decode())
    assert not Snapshot.objects.exists()


# --- the XML builder and the worker --------------------------------------------------------

def _spec(**changes) -> DomainSpec:
    base = {"name": "lab1", "uuid": "7d5e8f2a-1b3c-4d5e-8f9a-0b1c2d3e4f5a",
            "domain_type": "test", "vcpus": 1, "memory_mib": 512,
            "disk_path": "/srv/portal/local/vm.qcow2", "description": "ok"}
    return DomainSpec(**{**base, **changes})


def test_the_xml_builder_refuses_with_the_same_sentence() -> None:
    with pytest.raises(ValueError) as exc:
        build_domain_xml(_spec(description=BELL))
    assert str(exc.value) == "The description contains a control character (U+0007); remove it."
    assert str(exc.value) == free_text_problem(BELL, what="description", multiline=True)


def test_the_xml_builder_keeps_ordinary_unicode_and_line_breaks() -> None:
    text = "\n".join(NORMAL_TEXT)
    xml = build_domain_xml(_spec(description=text))
    import xml.etree.ElementTree as ET

    assert ET.fromstring(xml).findtext("description") == text  # noqa: S314 - built above


@pytest.mark.django_db
def test_an_old_purpose_with_a_control_character_fails_the_install_in_plain_words(
        site, django_capture_on_commit_callbacks) -> None:
    vm = approved_vm(site, django_capture_on_commit_callbacks)
    # Written before the check existed: the worker must say what is wrong, not "Unexpected".
    VirtualMachine.objects.filter(pk=vm.pk).update(purpose=BELL)
    op = run_pending(vm)
    assert op.status == OperationStatus.FAILED
    assert op.message == "The description contains a control character (U+0007); remove it."
    assert "Unexpected" not in op.detail
