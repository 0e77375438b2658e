"""One home for the small URL and address rules several layers share: which hosts are loopback, where a connection
URL keeps its password (userinfo or a password= query key) and how it is taken out, masked or put back, and the
`{export}` `{date}` `{run_id}` placeholders of destination paths (checked by config, filled by destinations)."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from engine.errors import RivetError

SECRET_QUERY_KEYS = frozenset({"password", "pwd", "sslpassword"})   # query keys that carry a password
PLACEHOLDERS = ("export", "date", "run_id")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_DSN_PASSWORD = re.compile(r"(?i)(password|pwd)=([^\s&;]+)")


# ---------------------------------------------------------------------------------------------------------------
# Addresses

def is_loopback(host: str) -> bool:
    """localhost (any case) or a loopback IP literal (127.0.0.0/8, ::1). Not a name lookup: a name that merely
    resolves to 127.0.0.1 is not trusted as loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Passwords in connection URLs

def password_of(url: str) -> str | None:
    """The password a URL carries (userinfo, unquoted; else the first non-empty password=/pwd=/sslpassword=)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return unquote(parts.password)
        for k, v in parse_qsl(parts.query):
            if k.lower() in SECRET_QUERY_KEYS and v:
                return v
    except ValueError:
        pass
    return None


def secrets_in(url: str) -> list[str]:
    """Every form of a secret the URL holds, to register for redaction: the userinfo password as written and
    unquoted, and the value of each password-like query key."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [password, unquote(password)] if password else []
    found += [value for key, value in parse_qsl(parts.query) if key.lower() in SECRET_QUERY_KEYS]
    return found


def without_password(url: str) -> str:
    """The URL with no password: userinfo keeps only the user, password-like query keys are dropped."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = userinfo.split(":", 1)[0] + "@" + host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if k.lower() not in SECRET_QUERY_KEYS])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def with_password(url: str, password: str) -> str:
    """The URL (which has a user and no password) with `password` put into its userinfo, quoted."""
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}:{quote(password, safe='')}@{host}"))


def mask_url(url: str) -> str:
    """postgresql://user:pw@host/db → postgresql://user:***@host/db (also masks password=... in DSNs)."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
            url = urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        pass
    return _DSN_PASSWORD.sub(r"\1=***", url)


# ---------------------------------------------------------------------------------------------------------------
# Destination placeholders

def placeholder_problem(template: str, shorten: Callable[[str], str] = str) -> str | None:
    """What is wrong with the placeholders of a destination path or prefix, or None."""
    bad = [n for n in PLACEHOLDER.findall(template) if n not in PLACEHOLDERS]
    if bad:
        return f"unknown placeholder {{{shorten(bad[0])}}}"
    rest = PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        return "an unbalanced { or }"
    return None


def fill_placeholders(template: str, values: dict[str, str]) -> str:
    """Replace each {name} by values[name]; an unknown name is refused (RIVET_DEST_PLACEHOLDER)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in values:
            raise RivetError("RIVET_DEST_PLACEHOLDER", f"unknown placeholder {m.group(0)} in destination {template!r}",
                             "placeholders: " + " ".join(f"{{{p}}}" for p in PLACEHOLDERS))
        return values[m.group(1)]
    return PLACEHOLDER.sub(sub, template)
