"""The broker's mandatory deny list: a pure match on the path string, before decide."""

from __future__ import annotations

import pytest
from writ.errors import InvalidArgument
from writ.mediators._denylist import DEFAULT_DENY_GLOBS, DenyList, check_glob

DENY = DenyList(["**/secrets/**", "build/*.sh"])


@pytest.mark.parametrize(("path", "pattern"), [
    # git: hooks and config run code the next time someone uses the repository
    (".git/hooks/pre-commit", "**/.git/hooks/**"),
    ("src/app/.git/hooks/post-checkout", "**/.git/hooks/**"),
    (".git/hooks", "**/.git/hooks/**"),
    (".git/config", "**/.git/config"),
    ("home/.gitconfig", "**/.gitconfig"),
    # shell start-up files, anywhere
    (".bashrc", "**/.bashrc"), ("u/.bash_profile", "**/.bash_profile"),
    (".profile", "**/.profile"), (".zshrc", "**/.zshrc"), (".zshenv", "**/.zshenv"),
    # credentials
    (".ssh", "**/.ssh/**"), (".ssh/authorized_keys", "**/.ssh/**"),
    ("a/b/.ssh/id_ed25519", "**/.ssh/**"), (".gnupg/pubring.kbx", "**/.gnupg/**"),
    (".netrc", "**/.netrc"), ("app/.env", "**/.env"),
    ("tls/server.pem", "**/*.pem"), ("tls/server.key", "**/*.key"),
    ("keys/id_rsa", "**/id_rsa*"), ("keys/id_rsa.pub", "**/id_rsa*"),
    ("id_ecdsa", "**/id_ecdsa*"), ("id_ed25519.pub", "**/id_ed25519*"),
    # the broker's own temporary files
    ("out/.writ-0123456789abcdef.part", "**/.writ-*.part"),
    # operator additions
    ("x/secrets/token", "**/secrets/**"), ("build/run.sh", "build/*.sh"),
    # case, compatibility forms, trailing dots and spaces
    (".SSH/config", "**/.ssh/**"), (".Git/HOOKS/pre-push", "**/.git/hooks/**"),
    ("Server.PEM", "**/*.pem"), ("ID_RSA", "**/id_rsa*"), (".BashRC", "**/.bashrc"),
    ("\uff0essh/authorized_keys", "**/.ssh/**"),        # fullwidth full stop
    (".\uff53\uff53\uff48/x", "**/.ssh/**"),            # fullwidth letters
    ("\ufb01le.pem", "**/*.pem"),                       # the "fi" ligature folds too
    (".bashrc.", "**/.bashrc"), (".bashrc. .", "**/.bashrc"), (".env ", "**/.env"),
    (".ssh./authorized_keys", "**/.ssh/**"), ("Secrets /a", "**/secrets/**"),
])
def test_denied(path: str, pattern: str) -> None:
    assert DENY.match(path) == pattern
    assert DENY.reason(path, pattern) == f"{path}: refused by the broker's deny list ({pattern})"


@pytest.mark.parametrize("path", [
    "", "reports/q3.csv", ".github/workflows/ci.yml", ".git/HEAD", ".git/objects/ab/cd",
    ".gitignore", "bashrc", ".bashrc.d/x", ".environment", ".env.example", "keys.txt",
    "id.rsa", "pem/readme", "docs/.ssh-notes.md", "build/sub/run.sh", "secretsfile",
    ".writ-0123.txt", "\u0455sh/x",  # a Cyrillic look-alike: a different name, not folded
])
def test_allowed(path: str) -> None:
    assert DENY.match(path) is None


def test_defaults_cannot_be_removed_and_extras_add() -> None:
    assert DenyList().patterns == DEFAULT_DENY_GLOBS
    assert DENY.patterns == (*DEFAULT_DENY_GLOBS, "**/secrets/**", "build/*.sh")
    assert DenyList(["**/.ssh/**"]).patterns == DEFAULT_DENY_GLOBS  # no duplicate


@pytest.mark.parametrize(("pattern", "message"), [
    ("", "deny glob is empty"),
    (".", "deny glob is empty"),
    ("/etc/**", ("deny glob '/etc/**': absolute path '/etc/**' refused: give a path relative "
     "to the workspace root")),
    ("a/../b", "deny glob 'a/../b': path 'a/../b' contains a '..' segment"),
    ("a//b", "deny glob 'a//b': path 'a//b' has an empty segment (doubled or trailing '/')"),
    ("a\x00b", "deny glob 'a\\x00b': path contains a NUL byte"),
])
def test_bad_operator_globs_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_glob(pattern)
    assert exc.value.details == message
    with pytest.raises(InvalidArgument):
        DenyList([pattern])
