"""The app's argv from the kernel command line: words after the first `--`, with quotes."""

from __future__ import annotations

from types import SimpleNamespace

from unirealm.guest.rootfs import app_argv, split_cmdline


def kernel(bootargs: str) -> SimpleNamespace:
    words = bootargs.split()
    argv = words[words.index("--") + 1 :] if "--" in words else []
    return SimpleNamespace(info=SimpleNamespace(bootargs=bootargs), argv=argv)


def test_quotes_group_words() -> None:
    k = kernel('quiet -- sh -c "cat /data/x | sort | wc -l" \'a  b\' plain')
    assert app_argv(k) == ["sh", "-c", "cat /data/x | sort | wc -l", "a  b", "plain"]


def test_unquoted_words_and_empty_quotes() -> None:
    assert app_argv(kernel("-- ls -1 /data")) == ["ls", "-1", "/data"]
    assert app_argv(kernel('-- echo "" x')) == ["echo", "", "x"]
    assert app_argv(kernel("strace")) == []


def test_quoted_double_dash_is_an_argument() -> None:
    assert app_argv(kernel('opt "--" -- a "--" b')) == ["a", "--", "b"]
    assert split_cmdline('x"y z"w') == [("xy zw", True)]
