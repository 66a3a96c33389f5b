"""Mail templates: defaults, escaping, overrides from a folder, and problems found at load time."""

from __future__ import annotations

from pathlib import Path

import pytest

from auth.templates import PLACEHOLDERS, MailTemplates, human_duration
from config import ConfigError, build_config
from gateway.cli import main

VALUES = {
    "verify_email": {"name": "Beyhan", "email": "b@example.com", "link": "https://x/v?t=1&u=2"},
    "code": {"email": "b@example.com", "code": "012345"},
    "password_reset": {"name": "Beyhan", "email": "b@example.com", "link": "https://x/r?t=1&u=2"},
}


def values(kind: str, **overrides: str) -> dict[str, str]:
    return {**VALUES[kind], "expires": "10 minutes", **overrides}


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).write_text(text, encoding="utf-8")


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        MailTemplates.load(folder)
    return caught.value.problems


# --- defaults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PLACEHOLDERS))
def test_every_default_has_three_parts_with_every_value(kind: str) -> None:
    mail = MailTemplates.load().render(kind, "b@example.com", **values(kind))
    assert mail.to == "b@example.com"
    assert mail.subject and "\n" not in mail.subject
    assert mail.html is not None and mail.html.startswith("<!DOCTYPE html>")
    for key, value in values(kind).items():
        assert value in mail.text, key
        assert value.replace("&", "&amp;") in mail.html, key


def test_default_subjects_say_what_the_mail_is() -> None:
    templates = MailTemplates.load()
    subjects = {k: templates.render(k, "a@b.c", **values(k)).subject for k in PLACEHOLDERS}
    assert subjects == {
        "code": "Your sign-in code",
        "password_reset": "Reset your password",
        "verify_email": "Verify your email address",
    }


def test_values_are_escaped_in_html_only() -> None:
    name = '<script>alert("x")</script> & Co'
    mail = MailTemplates.load().render("verify_email", "a@b.c", **values("verify_email", name=name))
    assert name in mail.text
    assert mail.html is not None
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co" in mail.html


def test_a_link_cannot_break_out_of_its_attribute() -> None:
    link = 'https://x/?t=1" onclick="evil()'
    mail = MailTemplates.load().render(
        "password_reset", "a@b.c", **values("password_reset", link=link)
    )
    assert mail.html is not None
    assert 'onclick="evil()' not in mail.html
    assert "https://x/?t=1&quot; onclick=&quot;evil()" in mail.html


def test_a_subject_stays_on_one_line_whatever_the_values(tmp_path: Path) -> None:
    write(tmp_path, "code.subject.txt", "Code $code for $email")
    templates = MailTemplates.load(tmp_path)
    mail = templates.render("code", "a@b.c", **values("code", email="a@b.c\r\nBcc: x@y.z"))
    assert "\r" not in mail.subject and "\n" not in mail.subject


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (86400, "24 hours"),
        (3600, "1 hour"),
        (600, "10 minutes"),
        (900, "15 minutes"),
        (60, "1 minute"),
        (90, "90 seconds"),
        (1, "1 second"),
        (0.2, "1 second"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# --- overrides -----------------------------------------------------------------------------------


def test_a_folder_overrides_file_by_file(tmp_path: Path) -> None:
    write(tmp_path, "code.subject.txt", "  Giriş kodunuz: $code  \n")
    write(tmp_path, "password_reset.html", "<a href='${link}'>$$ reset</a>")
    templates = MailTemplates.load(tmp_path)
    code = templates.render("code", "a@b.c", **values("code"))
    assert code.subject == "Giriş kodunuz: 012345"
    assert code.text == MailTemplates.load().render("code", "a@b.c", **values("code")).text
    reset = templates.render("password_reset", "a@b.c", **values("password_reset"))
    assert reset.html == "<a href='https://x/r?t=1&amp;u=2'>$ reset</a>"
    assert reset.subject == "Reset your password"  # not overridden


def test_an_empty_folder_keeps_every_default(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("notes: not a template", encoding="utf-8")
    custom = MailTemplates.load(tmp_path)
    default = MailTemplates.load()
    for kind in PLACEHOLDERS:
        assert custom.render(kind, "a@b.c", **values(kind)) == default.render(
            kind, "a@b.c", **values(kind)
        )


def test_a_template_may_leave_out_placeholders(tmp_path: Path) -> None:
    write(tmp_path, "verify_email.txt", "Just click: $link\n")
    mail = MailTemplates.load(tmp_path).render("verify_email", "a@b.c", **values("verify_email"))
    assert mail.text == "Just click: https://x/v?t=1&u=2\n"


# --- problems, reported at load time --------------------------------------------------------


def test_unknown_placeholder(tmp_path: Path) -> None:
    write(tmp_path, "code.txt", "Your code: $code, valid for ${minutes} ($user)")
    [problem] = problems_of(tmp_path)
    assert problem.startswith("email.templates_dir: code.txt: unknown placeholder $minutes, $user")
    assert "(known: code, email, expires)" in problem


def test_a_placeholder_of_another_kind_is_unknown(tmp_path: Path) -> None:
    write(tmp_path, "code.html", "<p>$link</p>")  # there is no link in a code mail
    assert "code.html: unknown placeholder $link" in problems_of(tmp_path)[0]


@pytest.mark.parametrize("text", ["costs $5", "trailing $", "${unclosed", "${}"])
def test_malformed_placeholder(tmp_path: Path, text: str) -> None:
    write(tmp_path, "password_reset.txt", text)
    problems = problems_of(tmp_path)
    assert any("password_reset.txt: malformed placeholder" in p for p in problems), problems


def test_unknown_file_name(tmp_path: Path) -> None:
    write(tmp_path, "verify-email.txt", "Hello $name")
    [problem] = problems_of(tmp_path)
    assert "verify-email.txt: unknown template file" in problem


@pytest.mark.parametrize("subject", ["", "   \n", "Line one\nLine two"])
def test_subject_must_be_one_line(tmp_path: Path, subject: str) -> None:
    write(tmp_path, "verify_email.subject.txt", subject)
    assert "verify_email.subject.txt: must be one non-empty line" in problems_of(tmp_path)[0]


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "code.txt").write_bytes(b"Kod: \xff $code")
    assert "code.txt: not valid UTF-8" in problems_of(tmp_path)[0]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, "code.txt", "$nope")
    write(tmp_path, "verify_email.html", "$also_nope")
    write(tmp_path, "extra.txt", "x")
    assert len(problems_of(tmp_path)) == 3


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"email": {"templates_dir": str(tmp_path / "nowhere")}}, env={})
    assert any(p.startswith("email.templates_dir: ") for p in caught.value.problems)
    assert build_config({"email": {"templates_dir": str(tmp_path)}}, env={})


def test_reset_url_needs_the_token_placeholder() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"email": {"reset_url": "https://app.example.com/reset"}}, env={})
    assert "email.reset_url: must contain the placeholder {token}" in caught.value.problems


def test_new_auth_settings_have_their_defaults() -> None:
    cfg = build_config({}, env={})
    assert cfg.auth.email_code_ttl == 600
    assert cfg.auth.email_code_max_attempts == 5
    assert cfg.auth.registration_token_ttl == 900
    assert cfg.auth.password_reset_ttl == 3600
    assert cfg.email.reset_url == "http://localhost:8080/reset-password?token={token}"
    assert cfg.email.templates_dir is None


@pytest.mark.parametrize(
    ("key", "value"),
    [("email_code_ttl", "1500ms"), ("password_reset_ttl", 0), ("email_code_max_attempts", 0)],
)
def test_bad_auth_settings(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"auth": {key: value}}, env={})
    assert any(p.startswith(f"auth.{key}: ") for p in caught.value.problems)


def test_check_config_refuses_a_bad_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    templates = tmp_path / "mail"
    templates.mkdir()
    write(templates, "code.txt", "$cod")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"jwt: {{secret: {'s' * 40}}}\n"
        f"database: {{url: 'sqlite+aiosqlite:///{tmp_path}/g.db'}}\n"
        f"email: {{templates_dir: '{templates}'}}\n",
        encoding="utf-8",
    )
    assert main(["check-config", "--config", str(config)]) == 2
    assert "code.txt: unknown placeholder $cod" in capsys.readouterr().err
    write(templates, "code.txt", "$code")
    assert main(["check-config", "--config", str(config)]) == 0
