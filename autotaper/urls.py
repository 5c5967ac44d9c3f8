"""Secrets in storage URLs: masked wherever a URL is printed (`mask_url`), removed where a
command is shown to be run again (`strip_password`), and scrubbed from any error text
(`scrub`). URLs are split by hand (`_split`), not by SQLAlchemy's parser: the userinfo
ends at the last @ before the query, so a password holding an unescaped @ stays whole."""

from __future__ import annotations

SECRET_KEYS = frozenset({"password", "passwd", "pwd", "pass", "sslpassword", "secret", "token", "access_token",
                         "auth_token", "api_key", "apikey", "private_key", "sslkey"})


def mask_url(url: str) -> str:
    """`url` with every secret in it replaced by ***: the password of user:password@ (an
    unescaped @ inside it included) and the values of query parameters such as `password`,
    `sslpassword` or `token` (libpq's and SQLAlchemy's forms). Everything printed goes through it."""
    return _hide_secrets(url, mask=True)


def strip_password(url: str) -> str:
    """`url` without its secrets (libpq then reads PGPASSWORD or ~/.pgpass): a command that
    can be printed and still run."""
    return _hide_secrets(url, mask=False)


def _split(url: str) -> tuple[str, str, str, str, str] | None:
    """(scheme, userinfo, host-and-path, query, "") of a URL written by hand: the userinfo
    ends at the LAST @ before the query, so a password holding an unescaped @ stays whole;
    None for a URL without a scheme."""
    if "://" not in url:
        return None
    scheme, rest = url.split("://", 1)
    q = rest.find("?")
    at = rest.rfind("@", 0, q if q >= 0 else len(rest))
    head, query = (rest[:q], rest[q + 1:]) if q >= 0 else (rest, "")
    userinfo, hostpath = (head[:at], head[at + 1:]) if at >= 0 else ("", head)
    return scheme, userinfo, hostpath, query, ""


def escape_userinfo(url: str) -> str:
    """`url` with an unescaped @ or : inside its password percent-encoded, so that SQLAlchemy
    and libpq read the password and the host that were meant (the userinfo ends at the last @)."""
    from urllib.parse import quote

    parts = _split(url)
    if parts is None or ":" not in parts[1]:
        return url
    scheme, userinfo, hostpath, query, _ = parts
    user, _, password = userinfo.partition(":")
    if "@" not in password:
        return url
    return f"{scheme}://{user}:{quote(password, safe='%')}@{hostpath}" + (f"?{query}" if query else "")


def secrets_in(url: str | None) -> list[str]:
    """The secret strings of `url` (its password, its secret query values), longest first: what
    error text must never show."""
    parts = _split(url or "")
    if parts is None:
        return []
    _, userinfo, _, query, _ = parts
    found = [userinfo.split(":", 1)[1]] if ":" in userinfo else []
    from urllib.parse import unquote

    for pair in query.split("&"):
        key, eq, value = pair.partition("=")
        if eq and key.strip().lower() in SECRET_KEYS and value:
            found.append(value)
    from urllib.parse import quote

    found += [unquote(v) for v in found if unquote(v) != v] + [quote(v, safe="%") for v in found]
    found += [part for v in found for part in v.split("@") if len(part) >= 4]  # as a parser that split it shows it
    return sorted({v for v in found if v}, key=len, reverse=True)


def scrub(text: str, *urls: str | None) -> str:
    """`text` with every secret of `urls` replaced by ***."""
    for url in urls:
        for secret in secrets_in(url):
            text = text.replace(secret, "***")
    return text


def _hide_secrets(url: str, *, mask: bool) -> str:
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, hostpath, query, _ = parts
    if not userinfo and not query:
        return url
    out = f"{scheme}://"
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        out += user + (":***" if colon and mask else "") + "@"
    out += hostpath
    kept = []
    for pair in query.split("&") if query else []:
        key, eq, value = pair.partition("=")
        if key.strip().lower() in SECRET_KEYS:
            if mask:
                kept.append(f"{key}=***")
            continue
        kept.append(pair)
    return out + ("?" + "&".join(kept) if kept else "")
