"""Client keys (`[server] api_keys`, `[[keys]]`) and their limits.

`KeyTable` finds the caller's `Key` from its Bearer token: the SHA-256 of the token is compared in constant time with
every configured digest (no early exit); keys are held only as digests. A key's tenant is `tenant_of` of the key
itself, however the config gives it (the tenants of keys that were `api_keys` before stay): made when the config
holds the key, else from the first token that matches its digest.

`Limiter` admits a limited key's requests: requests and tokens per minute as GCRA windows (a "theoretical arrival
time" per limit: a key may spend its whole minute's budget at once, then earns it back evenly), and in-flight requests
(`max_concurrent`). One admission checks every limit of the key and takes from all of them or from none. Tokens are the
input estimated from the body (bytes / 4) at admission and settled with the usage the response reports when it ends.

Two backends, chosen by the store:
- `RedisLimits` (`[store] backend = "redis"`): shared by every worker and instance using that Redis. An admission is
  ONE Lua script (atomic on the server, on the server's clock); the end of a request (settle + release) another.
  In-flight requests are leases in a sorted set that expire unless their worker renews them, so a worker or host
  that dies frees its slots within `LEASE_SECONDS`.
- `LocalLimits` (otherwise): the workers of one `ferroute serve` share a small file in shared memory
  (`FERROUTE_LIMITS_FILE`, made by the CLI), mapped into each, read and written under `flock`. A slot names the
  worker's pid: when a key is full, slots of pids that no longer exist are taken back (a crashed worker's).
  Measured (bench/limits_cost.py, one process): 8 µs per admission + end here (a third of it the headers' text),
  against 33 µs for the same state in a SQLite file with `BEGIN IMMEDIATE` (WAL, synchronous off, in /dev/shm).
Nothing here runs for a key without limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import fnmatch
import hashlib
import hmac
import logging
import math
import mmap
import os
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from ferroute.config import KeyConfig
from ferroute.errors import RouterError, rate_limited
from ferroute.routing.resp import client_for
from ferroute.store import ANONYMOUS, tenant_of

error_log = logging.getLogger("ferroute.error")

PERIOD = 60.0  # seconds: the window of the per-minute limits
LEASE_SECONDS = 60.0  # Redis: an in-flight slot not renewed for this long is free again
FILE_ENV = "FERROUTE_LIMITS_FILE"
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    index: int  # the key's place among the limited keys (its block in the shared file)


@dataclass(frozen=True, slots=True)
class Key:
    """A caller: its name (the access log's `key`), tenant, allowed models and limits (None: none)."""

    name: str
    tenant: str
    models: re.Pattern[str] | None = None
    globs: tuple[str, ...] = ()
    limits: Limits | None = None

    def allows(self, model: str) -> bool:
        return self.models is None or self.models.match(model) is not None


ANONYMOUS_KEY = Key("", ANONYMOUS)  # no keys configured: everyone
DEFAULT_NAME = "default"  # the name of an `[server] api_keys` key


class KeyTable:
    """Every configured key, by digest."""

    def __init__(self, api_keys: list[str], keys: list[KeyConfig]) -> None:
        self.digests: list[bytes] = []
        self.keys: list[Key] = []
        limited = 0
        for config in keys:
            limits = None
            if config.limited:
                limits = Limits(config.requests_per_minute, config.tokens_per_minute, config.max_concurrent, limited)
                limited += 1
            models = None
            if config.models is not None:
                models = re.compile("|".join(fnmatch.translate(glob) for glob in config.models) or r"(?!)")
            secret = config.secret()
            tenant = tenant_of(secret.encode()) if secret is not None else ""  # ("": from its first token)
            self._add(config.digest(), config.name, models, tuple(config.models or ()), limits, tenant)
        for plain in api_keys:
            digest = hashlib.sha256(plain.encode()).digest()
            if digest not in self.digests:  # (the same key in both lists: its `[[keys]]` entry wins)
                self._add(digest, DEFAULT_NAME, None, (), None, tenant_of(plain.encode()))
        self.required = bool(self.digests)
        self.limited = [key for key in self.keys if key.limits is not None]

    def _add(self, digest: bytes, name: str, models: re.Pattern[str] | None, globs: tuple[str, ...],
             limits: Limits | None, tenant: str) -> None:  # fmt: skip
        if digest in self.digests:
            raise ValueError(f"key {name!r} is the same key as {self.keys[self.digests.index(digest)].name!r}")
        self.digests.append(digest)
        self.keys.append(Key(name, tenant, models, globs, limits))

    def find(self, token: bytes) -> Key | None:
        """The key whose digest is the token's, compared with every key (no early exit: the time taken says nothing
        about which one matched, or how much of one)."""
        digest = hashlib.sha256(token).digest()
        found = None
        index = 0
        for i, (known, key) in enumerate(zip(self.digests, self.keys, strict=True)):
            if hmac.compare_digest(digest, known):
                found, index = key, i
        if found is not None and not found.tenant:  # (a `key_sha256` key, seen for the first time)
            found = self.keys[index] = dataclasses.replace(found, tenant=tenant_of(token))
        return found


# --- window arithmetic -------------------------------------------------------------------------------------------


def gcra(tat: float, now: float, limit: int, cost: float) -> tuple[bool, float, float, int, float]:
    """One GCRA admission of `cost` against `limit` per `PERIOD` whose theoretical arrival time is `tat`: (allowed,
    the new tat, seconds until it would be allowed, remaining after it, seconds until the window is whole again). A
    cost above the whole budget is admitted when the window is whole (it then owes the excess)."""
    step = PERIOD / limit
    base = max(tat, now)
    if base + min(cost, limit) * step - now > PERIOD + 1e-9:
        wait = base + min(cost, limit) * step - PERIOD - now
        return False, tat, wait, _remaining(base, now, step), base - now
    new = base + cost * step
    return True, new, 0.0, _remaining(new, now, step), new - now


def _remaining(tat: float, now: float, step: float) -> int:
    return max(0, math.floor((PERIOD - (tat - now)) / step + 1e-9))


def settled(tat: float, now: float, limit: int, delta: float) -> float:
    """`tat` after `delta` more tokens (fewer when negative) than were estimated at admission."""
    step = PERIOD / limit
    if delta >= 0:
        return max(tat, now) + delta * step
    return max(tat + delta * step, now)


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it (Go's durations): `20ms`, `1s`, `6m0s`, `1m30.5s`, `1h0m0s`."""
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms < 1000:
        return f"{ms}ms" if ms > 0 else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, part = divmod(rest, 1000)
    secs = f"{whole}.{part:03d}".rstrip("0") if part else str(whole)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


@dataclass(slots=True)
class Window:
    """One limit's state after an admission, for the headers."""

    limit: int
    remaining: int
    reset: float  # seconds


def headers_of(requests: Window | None, tokens: Window | None) -> Headers:
    """OpenAI's `x-ratelimit-*` headers for a key's windows."""
    out: Headers = []
    if requests is not None:
        out += [
            (b"x-ratelimit-limit-requests", b"%d" % requests.limit),
            (b"x-ratelimit-remaining-requests", b"%d" % requests.remaining),
            (b"x-ratelimit-reset-requests", duration(requests.reset).encode()),
        ]
    if tokens is not None:
        out += [
            (b"x-ratelimit-limit-tokens", b"%d" % tokens.limit),
            (b"x-ratelimit-remaining-tokens", b"%d" % tokens.remaining),
            (b"x-ratelimit-reset-tokens", duration(tokens.reset).encode()),
        ]
    return out


def estimate(body_bytes: int) -> int:
    """Input tokens guessed from a request body's size (about 4 bytes a token), before the upstream says."""
    return max(1, body_bytes // 4)


@dataclass(slots=True, eq=False)
class Grant:
    """An admitted request of a limited key: what it holds until it ends (`Limiter.end`)."""

    key: Key
    cost: int  # the tokens taken at admission
    headers: Headers
    lease: Any = None  # its in-flight slot (the backend's), None without max_concurrent
    ended: bool = False


def refused(key: Key, reasons: list[str], wait: float, headers: Headers) -> RouterError:
    return rate_limited(key.name, " and ".join(reasons), wait, headers)


class Limiter:
    """Admits and ends limited keys' requests on one backend."""

    async def admit(self, key: Key, cost: int) -> Grant:
        """Take one request, `cost` tokens and a slot from `key`'s limits, or raise the 429 (taking nothing)."""
        raise NotImplementedError

    async def end(self, grant: Grant, used: int | None) -> None:
        """The request has ended, having used `used` tokens (None: unknown; the estimate stands): its slot is free
        and its tokens settled. Idempotent."""
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# --- one instance: a shared-memory file ----------------------------------------------------------------------------

_HEAD = struct.Struct("<dd")  # a key's block: requests tat, tokens tat, then max_concurrent slots (pid << 32 | n)
_MAGIC = b"ferroute-limits1"


def layout(keys: list[Key]) -> tuple[list[int], int]:
    """Each limited key's offset in the shared file, and the file's size."""
    offsets: list[int] = []
    at = len(_MAGIC)
    for key in keys:
        assert key.limits is not None
        offsets.append(at)
        at += _HEAD.size + 8 * (key.limits.max_concurrent or 0)
    return offsets, max(at, mmap.PAGESIZE)


def make_file(keys: list[Key], directory: str | None = None) -> str:
    """A zeroed shared file for `keys` (in /dev/shm where there is one): the CLI makes it once per instance."""
    import tempfile

    if directory is None and os.path.isdir("/dev/shm"):
        directory = "/dev/shm"
    _, size = layout(keys)
    fd, path = tempfile.mkstemp(prefix="ferroute-limits-", dir=directory)
    try:
        os.ftruncate(fd, size)
        os.pwrite(fd, _MAGIC, 0)
    finally:
        os.close(fd)
    return path


class LocalLimits(Limiter):
    """The workers of one instance, through a shared file (`path`; None: this process alone, in anonymous memory)."""

    def __init__(self, keys: list[Key], path: str | None = None) -> None:
        self.offsets, size = layout(keys)
        self.fd = -1
        if path is None:
            self.map = mmap.mmap(-1, size)
            self.map[: len(_MAGIC)] = _MAGIC
        else:
            self.fd = os.open(path, os.O_RDWR)
            if os.fstat(self.fd).st_size < size:
                raise ValueError(f"{path} does not fit the configured keys")
            self.map = mmap.mmap(self.fd, size)
        self.view = memoryview(self.map)
        self.pid = os.getpid()
        self.serial = 0

    def _lock(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def _unlock(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    async def admit(self, key: Key, cost: int) -> Grant:
        return self.admit_now(key, cost, time.time())

    def admit_now(self, key: Key, cost: int, now: float) -> Grant:
        limits = key.limits
        assert limits is not None
        at = self.offsets[limits.index]
        reasons: list[str] = []
        wait = 0.0
        self._lock()
        try:
            requests_tat, tokens_tat = _HEAD.unpack_from(self.map, at)
            requests = tokens = None
            rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
            if rpm is not None:
                ok, requests_tat, after, remaining, reset = gcra(requests_tat, now, rpm, 1)
                requests = Window(rpm, remaining, reset)
                if not ok:
                    reasons.append("requests per minute")
                    wait = max(wait, after)
            if tpm is not None:
                ok, tokens_tat, after, remaining, reset = gcra(tokens_tat, now, tpm, cost)
                tokens = Window(tpm, remaining, reset)
                if not ok:
                    reasons.append("tokens per minute")
                    wait = max(wait, after)
            slot = -1
            if limits.max_concurrent is not None:
                slot = self._free_slot(at + _HEAD.size, limits.max_concurrent)
                if slot < 0:
                    reasons.append("concurrent requests")
                    wait = max(wait, 1.0)
            headers = headers_of(requests, tokens)
            if reasons:
                raise refused(key, reasons, wait, headers)
            _HEAD.pack_into(self.map, at, requests_tat, tokens_tat)
            lease = None
            if slot >= 0:
                self.serial = self.serial % 0xFFFFFFFF + 1
                lease = (slot, self.pid << 32 | self.serial)
                struct.pack_into("<q", self.map, slot, lease[1])
            return Grant(key, cost, headers, lease)
        finally:
            self._unlock()

    def _free_slot(self, at: int, count: int) -> int:
        """The offset of a free slot among `count` at `at` (taking back those of dead workers when none is), or -1."""
        slots = self.view[at : at + 8 * count].cast("q")
        try:
            values = slots.tolist()
        finally:
            slots.release()
        with contextlib.suppress(ValueError):
            return at + 8 * values.index(0)
        free = -1
        for i, value in enumerate(values):
            if not _alive(value >> 32):
                struct.pack_into("<q", self.map, at + 8 * i, 0)
                if free < 0:
                    free = at + 8 * i
        return free

    async def end(self, grant: Grant, used: int | None) -> None:
        self.end_now(grant, used, time.time())

    def end_now(self, grant: Grant, used: int | None, now: float) -> None:
        if grant.ended:
            return
        grant.ended = True
        limits = grant.key.limits
        assert limits is not None
        tpm = limits.tokens_per_minute
        settle = tpm is not None and used is not None and used != grant.cost
        if grant.lease is None and not settle:
            return
        at = self.offsets[limits.index]
        self._lock()
        try:
            if settle:
                assert tpm is not None and used is not None
                requests_tat, tokens_tat = _HEAD.unpack_from(self.map, at)
                _HEAD.pack_into(self.map, at, requests_tat, settled(tokens_tat, now, tpm, used - grant.cost))
            if grant.lease is not None:
                slot, value = grant.lease
                if struct.unpack_from("<q", self.map, slot)[0] == value:
                    struct.pack_into("<q", self.map, slot, 0)
        finally:
            self._unlock()

    async def aclose(self) -> None:
        self.view.release()
        self.map.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- several instances: Redis ---------------------------------------------------------------------------------------

# KEYS: requests tat, tokens tat, in-flight leases (a sorted set: member -> expiry ms).
# ARGV: requests per minute, tokens per minute, max concurrent (0: no such limit), cost, lease member, lease ms,
# now ms ("" : the server's clock). Returns {allowed, wait ms, requests remaining, requests reset ms, tokens
# remaining, tokens reset ms, which refused (1: requests, 2: tokens, 4: in-flight)}; takes from every limit or none.
ADMIT = """
local now = tonumber(ARGV[7])
if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local period = 60000
local function gcra(key, limit, cost)
    local step = period / limit
    local tat = tonumber(redis.call('GET', key) or '0')
    local base = math.max(tat, now)
    local first = math.min(cost, limit) * step
    if base + first - now > period + 0.001 then
        local remaining = math.max(0, math.floor((period - (base - now)) / step + 1e-9))
        return false, base, base + first - period - now, remaining, base - now
    end
    local new = base + cost * step
    local remaining = math.max(0, math.floor((period - (new - now)) / step + 1e-9))
    return true, new, 0, remaining, new - now
end
local ok, wait, why = true, 0, 0
local rpm, tpm, conc, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local r_new, r_rem, r_reset, t_new, t_rem, t_reset = 0, 0, 0, 0, 0, 0
if rpm > 0 then
    local good, after
    good, r_new, after, r_rem, r_reset = gcra(KEYS[1], rpm, 1)
    if not good then ok = false; why = why + 1; wait = math.max(wait, after) end
end
if tpm > 0 then
    local good, after
    good, t_new, after, t_rem, t_reset = gcra(KEYS[2], tpm, cost)
    if not good then ok = false; why = why + 2; wait = math.max(wait, after) end
end
if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    if redis.call('ZCARD', KEYS[3]) >= conc then ok = false; why = why + 4; wait = math.max(wait, 1000) end
end
if ok then
    if rpm > 0 then redis.call('SET', KEYS[1], string.format('%.3f', r_new), 'PX', math.ceil(r_new - now) + 1000) end
    if tpm > 0 then redis.call('SET', KEYS[2], string.format('%.3f', t_new), 'PX', math.ceil(t_new - now) + 1000) end
    if conc > 0 then
        local lease = tonumber(ARGV[6])
        redis.call('ZADD', KEYS[3], now + lease, ARGV[5])
        redis.call('PEXPIRE', KEYS[3], lease * 2)
    end
end
return {ok and 1 or 0, math.ceil(wait), r_rem, math.ceil(r_reset), t_rem, math.ceil(t_reset), why}
"""

# KEYS[1]: in-flight leases; ARGV: lease ms, then this worker's members in it: their expiry pushed on (server clock).
RENEW = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2)
return 1
"""

# KEYS: tokens tat, in-flight leases. ARGV: tokens per minute (0: none), tokens more than estimated (may be < 0),
# lease member ("" : none), now ms ("" : the server's clock).
END = """
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local tpm, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
if tpm > 0 and delta ~= 0 then
    local now = tonumber(ARGV[4])
    if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    local step = 60000 / tpm
    local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
    if delta >= 0 then tat = math.max(tat, now) + delta * step else tat = math.max(tat + delta * step, now) end
    if tat > now then
        redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
    else
        redis.call('DEL', KEYS[1])
    end
end
return 1
"""


_REASONS = ((1, "requests per minute"), (2, "tokens per minute"), (4, "concurrent requests"))


@dataclass(slots=True)
class _Held:
    """This worker's leases, renewed while it holds any."""

    leases: dict[str, str] = field(default_factory=dict)  # member -> its sorted set
    task: asyncio.Task[None] | None = None


class RedisLimits(Limiter):
    """Every worker and instance on one Redis. Fails open (admits, and logs) while Redis cannot be reached."""

    def __init__(self, url: str, prefix: str = "ferroute:", client: Any = None) -> None:
        # (`ferroute.routing.resp`: a pipelined RESP client, a fifth of redis-py's CPU per script call.)
        self.client = client or client_for(url, timeout=2.0)
        self.owned = client is None
        self.prefix = prefix
        self.admit_script = self.client.register_script(ADMIT)
        self.end_script = self.client.register_script(END)
        self.renew_script = self.client.register_script(RENEW)
        self.held = _Held()
        self.tag = f"{os.getpid()}:{os.urandom(4).hex()}:"
        self.serial = 0
        self.warned = 0.0
        self.now: str = ""  # (tests: a fixed clock in ms)

    def _keys(self, key: Key) -> list[str]:
        base = f"{self.prefix}limit:{{{key.name}}}:"  # (one hash slot per key: Redis Cluster runs the script)
        return [base + "r", base + "t", base + "c"]

    async def admit(self, key: Key, cost: int) -> Grant:
        limits = key.limits
        assert limits is not None
        member = ""
        if limits.max_concurrent is not None:
            self.serial += 1
            member = f"{self.tag}{self.serial}"
        names = self._keys(key)
        rpm, tpm, most = limits.requests_per_minute or 0, limits.tokens_per_minute or 0, limits.max_concurrent or 0
        args: list[str | int] = [rpm, tpm, most, cost, member, int(LEASE_SECONDS * 1000), self.now]
        try:
            ok, wait, r_rem, r_reset, t_rem, t_reset, why = await self.admit_script(keys=names, args=args)
        except Exception as e:  # (redis' errors, and OSError)
            self._down(e)
            return Grant(key, cost, [])
        requests = tokens = None
        if limits.requests_per_minute is not None:
            requests = Window(limits.requests_per_minute, int(r_rem), int(r_reset) / 1000)
        if limits.tokens_per_minute is not None:
            tokens = Window(limits.tokens_per_minute, int(t_rem), int(t_reset) / 1000)
        headers = headers_of(requests, tokens)
        if not ok:
            reasons = [reason for bit, reason in _REASONS if int(why) & bit]
            raise refused(key, reasons, int(wait) / 1000, headers)
        if member:
            self.held.leases[member] = names[2]
            if self.held.task is None:
                self.held.task = asyncio.ensure_future(self._renew())
        return Grant(key, cost, headers, member or None)

    async def end(self, grant: Grant, used: int | None) -> None:
        if grant.ended:
            return
        grant.ended = True
        limits = grant.key.limits
        assert limits is not None
        tpm = limits.tokens_per_minute or 0
        delta = used - grant.cost if used is not None and tpm else 0
        if grant.lease is None and not delta:
            return
        if grant.lease is not None:
            self.held.leases.pop(grant.lease, None)
        names = self._keys(grant.key)
        try:
            await self.end_script(keys=[names[1], names[2]], args=[tpm, delta, grant.lease or "", self.now])
        except Exception as e:
            self._down(e)

    async def _renew(self) -> None:
        """Every third of `LEASE_SECONDS` while this worker holds leases: their expiry pushed on."""
        try:
            while self.held.leases:
                await asyncio.sleep(LEASE_SECONDS / 3)
                if not self.held.leases:
                    break
                by_set: dict[str, list[str]] = {}
                for member, zset in self.held.leases.items():
                    by_set.setdefault(zset, []).append(member)
                try:
                    for zset, members in by_set.items():  # (one set per limited key this worker is serving)
                        await self.renew_script(keys=[zset], args=[int(LEASE_SECONDS * 1000), *members])
                except Exception as e:
                    self._down(e)
        finally:
            self.held.task = None

    def _down(self, error: BaseException) -> None:
        now = time.monotonic()
        if now - self.warned > 10:
            self.warned = now
            error_log.error("rate limits: redis failed (%s); requests are admitted without limits meanwhile", error)

    async def aclose(self) -> None:
        if self.held.task is not None:
            self.held.task.cancel()
        if self.owned:
            with contextlib.suppress(Exception):
                await self.client.aclose()
