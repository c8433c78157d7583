"""Talking to Milvus through ``pymilvus.MilvusClient``: connecting, calling with errors mapped to
RetryableError/PermanentError, a one-shot client for admin helpers, and filter expressions.

Every Milvus user of Eddy (``components.milvus_store``, ``components.milvus_admin``, the vetted
index of ``components.curation``) goes through ``connect_milvus`` and ``call_milvus``, so
connection problems, timeouts and rate limits surface as RetryableError and anything else Milvus
rejects as PermanentError, the pymilvus exception being the ``__cause__``.

ACL filtering. A chunk is visible when its ACL is empty or shares a group with the caller. The
filter is an OR of ``like`` tests on ``acl_key``, a string ``|t1|t2|`` of fixed 16-hex-digit
tokens (sha256 of each group name; ``|*|`` for an empty ACL), e.g. for groups ``["eng"]``::

    acl_key == "|*|" or acl_key like "%|4f1c...|%"

rather than ``array_contains_any(acl, [...])`` because milvus-lite evaluates array functions row
by row in Python but ``==``/``like`` vectorised with Arrow (``python -m bench.milvus_search``, 15k
rows: search p50 81 ms with this filter vs 466 ms with ``array_contains_any``); hashing keeps group
names out of the expression (no escaping, no LIKE wildcards).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from components.base import PermanentError, RetryableError

T = TypeVar("T")

_PUBLIC_KEY = "|*|"


# --------------------------------------------------------------------------- errors and calls
def classify_error(exc: BaseException, what: str) -> Exception:
    """The error to raise for ``exc`` from a pymilvus call (it does not raise it): RetryableError for
    connection problems, timeouts and rate limits anywhere in its cause chain, PermanentError otherwise;
    the message is ``Milvus: <what> failed: <detail>``."""
    import grpc
    from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

    transient_codes = {
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED,
    }
    retryable = False
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (ConnectError, MilvusUnavailableException, ConnectionError, TimeoutError)):
            retryable = True
        elif isinstance(cur, grpc.RpcError) and hasattr(cur, "code") and cur.code() in transient_codes:
            retryable = True
        elif isinstance(cur, MilvusException):
            code = cur.code
            message = (cur.message or "").lower()
            if isinstance(code, grpc.StatusCode) and code in transient_codes:
                retryable = True
            elif code in (2, 8) or "retry timeout" in message or "retry run out" in message \
                    or "fail connecting" in message or "server unavailable" in message:
                retryable = True  # 2: cannot connect, 8: rate limited
        cur = cur.__cause__ or cur.__context__
    detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    cls = RetryableError if retryable else PermanentError
    return cls(f"Milvus: {what} failed: {detail}")


def is_not_loaded(exc: BaseException) -> bool:
    """Whether ``exc`` says the collection is released (not loaded), as after a Milvus Lite restart."""
    code = getattr(exc, "code", None)
    message = str(getattr(exc, "message", "") or exc).lower()
    return code == 101 or "not loaded" in message or "notloaded" in message


def connect_milvus(uri: str, timeout_s: float) -> Any:
    """A ``pymilvus.MilvusClient`` for ``uri`` whose RPCs time out after ``timeout_s`` seconds;
    RetryableError when the server cannot be reached, PermanentError for a URI it rejects."""
    from pymilvus import MilvusClient

    try:
        return MilvusClient(uri=uri, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - classified below
        raise classify_error(exc, f"connect to {uri}") from exc


def call_milvus(client: Any, reload: Sequence[str], what: str, fn: Callable[..., T], *args: Any,
                timeout_s: float, **kwargs: Any) -> T:
    """``fn(*args, timeout=timeout_s, **kwargs)`` with pymilvus errors translated to RetryableError /
    PermanentError (the pymilvus exception is the ``__cause__``). A restarted Milvus Lite server starts
    with indexed collections released: then the ``reload`` collections are loaded and the call retried once."""
    kwargs.setdefault("timeout", timeout_s)
    try:
        return fn(*args, **kwargs)
    except (RetryableError, PermanentError):
        raise
    except Exception as exc:  # noqa: BLE001 - classified below
        if not is_not_loaded(exc):
            raise classify_error(exc, what) from exc
        try:
            for name in reload:
                client.load_collection(name, timeout=timeout_s)
            return fn(*args, **kwargs)
        except Exception as again:  # noqa: BLE001
            raise classify_error(again, what) from again


@contextlib.contextmanager
def milvus_session(uri: str, what: str, timeout_s: float = 20.0) -> Iterator[Any]:
    """A ``MilvusClient`` for one helper call, closed after. Errors inside the block are raised as
    RetryableError (unreachable, timeout) or PermanentError (anything else), the original as ``__cause__``."""
    client = connect_milvus(uri, timeout_s)
    try:
        yield client
    except (RetryableError, PermanentError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise classify_error(exc, what) from exc
    finally:
        client.close()


# --------------------------------------------------------------------------- filter expressions
def group_token(group: str) -> str:
    """Fixed-width token of one ACL group name (16 hex digits of its sha256)."""
    return hashlib.sha256(group.encode("utf-8")).hexdigest()[:16]


def acl_key(acl: Iterable[str]) -> str:
    """``|t1|t2|`` over the sorted tokens of ``acl``; ``|*|`` for an empty ACL (visible to all)."""
    tokens = sorted({group_token(g) for g in acl})
    return "|" + "|".join(tokens) + "|" if tokens else _PUBLIC_KEY


def acl_filter(groups: Sequence[str]) -> str:
    """Milvus filter expression selecting chunks visible to ``groups`` (see the module docstring)."""
    terms = [f'acl_key == "{_PUBLIC_KEY}"']
    terms += [f'acl_key like "%|{token}|%"' for token in sorted({group_token(g) for g in groups})]
    return " or ".join(terms)


def quote(value: str) -> str:
    """``value`` as a double-quoted Milvus expression string literal."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return f'"{escaped}"'


def in_expr(field: str, values: Sequence[str]) -> str:
    """``field in ["a", "b", ...]``."""
    return f"{field} in [{', '.join(quote(v) for v in values)}]"

