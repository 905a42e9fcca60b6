"""A reproducer per failing probe: the commands that send again what the harness sent.

For every FAIL probe of an outcome, the first failing observation whose call the run still
remembers (:class:`harness.replay.SentLog`, by request ID) becomes a
:class:`~harness.reporting.model.Reproducer`:

* a ``grpcurl`` line: the method, ``-d`` the request as JSON (read with the service's
  descriptors, and only when that JSON turns back into the very bytes sent), ``-H`` every
  metadata entry, ``-plaintext`` / ``-cacert`` / ``-cert`` / ``-key`` / ``-authority`` as
  the run reached the target, ``-protoset`` when the config names a descriptor set;
* a ``hipaa-grpc replay`` line, always: the same with the request bytes as base64, so what
  JSON cannot carry (malformed bytes, unknown fields, two messages to a unary method) is
  sent exactly;
* for a raw HTTP/2 probe (its request kept in :data:`harness.h2client.RAW` under its
  request ID), a ``hipaa-grpc replay --frames`` line: the header list, body and pacing
  (:func:`harness.replay.frames_text`), credentials as ``${HIPAA_TOKEN_<PRINCIPAL>}``
  placeholders the replay fills from the environment, ``--expect`` the classified answer;
* the re-run line (this control alone, same target and seed), the fallback when no single
  remembered call reproduces the finding.

Nothing leaks: every credential becomes ``$HIPAA_TOKEN_<PRINCIPAL>`` (a token the harness
forged, ``$HIPAA_FORGED_TOKEN``), listed in ``fill``; a request or header that holds one of
the run's canaries or secrets gets no command line at all, only the re-run line.
"""

from __future__ import annotations

import base64
import contextlib
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from harness.canary import CanarySet
from harness.errors import HarnessError
from harness.h2client import RAW, RawSent
from harness.outcome import Outcome, Status
from harness.replay import DEFAULT, MAX_FRAMES_TEXT, OTHER, PRINCIPAL, Sent, SentLog, frames_text
from harness.reporting.model import Reproducer
from harness.reporting.redact import JWT, known_secrets
from harness.run import Run
from harness.transport import Transport

FORGED = "HIPAA_FORGED_TOKEN"
_WORD = re.compile(r"[^A-Z0-9]+")


def placeholder(principal: str) -> str:
    """``HIPAA_TOKEN_LEAST_PRIVILEGED`` for principal ``least-privileged``."""
    return "HIPAA_TOKEN_" + _WORD.sub("_", principal.upper()).strip("_")


@dataclass(frozen=True)
class Arg:
    """One shell word: literal text with ``$NAME`` placeholders in it (``names``)."""

    text: str
    names: tuple[str, ...] = ()

    def shell(self) -> str:
        """The word quoted for a POSIX shell, placeholders left to expand."""
        if not self.names:
            return shlex.quote(self.text)
        out = self.text
        for ch in ("\\", '"', "`"):
            out = out.replace(ch, "\\" + ch)
        out = out.replace("$", "\\$")
        for name in self.names:
            out = out.replace(f"\\${name}", f"${name}")
        return f'"{out}"'


def line(words: Iterable[str | Arg]) -> str:
    """A command line from words (plain strings are literal)."""
    return " ".join(w.shell() if isinstance(w, Arg) else shlex.quote(w) for w in words)


@dataclass(frozen=True)
class Context:
    """What every reproducer of a run shares: where the target is and how it was reached."""

    address: str
    transport: Transport
    authority: str | None
    cacert: str | None
    client: tuple[str, str] | None  # the run's client certificate and key files
    principal_certs: dict[str, tuple[str, str]]
    protoset: str | None
    request_id_key: str
    tokens: dict[str, str]  # principal -> token (to replace, never to write)
    presentations: dict[str, tuple[str, str]]  # principal -> (header, scheme)
    canaries: CanarySet | None
    rerun: str

    @classmethod
    def of(cls, run: Run, rerun: str, tokens: dict[str, str], seed: int | None) -> Context:
        """The context of ``run``; ``tokens`` are the principals' tokens (to replace)."""
        config = run.config

        def path(key: str) -> str | None:
            found = config.path(key)
            return str(found) if found is not None else None

        cert, key = path("mtls.client_cert"), path("mtls.client_key")
        return cls(
            address=run.spec.address,
            transport=run.endpoint.transport,
            authority=run.endpoint.server_name,
            cacert=path("tls.ca_bundle"),
            client=(cert, key) if cert and key else None,
            principal_certs={
                p.name: (str(p.client_cert), str(p.client_key))
                for p in run.principals.values()
                if p.client_cert is not None and p.client_key is not None
            },
            protoset=path("schema.descriptor_set"),
            request_id_key=run.request_id_key,
            tokens=tokens,
            presentations={
                p.name: (p.presentation.header, p.presentation.scheme)
                for p in run.principals.values()
            },
            canaries=CanarySet.for_seed(seed) if seed is not None else None,
            rerun=rerun,
        )


def tokens_of(run: Run) -> dict[str, str]:
    """Each principal's token, to replace wherever it appears (a failing source is left out)."""
    out = {}
    for principal in run.principals.values():
        if principal.has_token:
            with contextlib.suppress(HarnessError):
                out[principal.name] = principal.token()
    return out


def failure_text(outcome: Outcome, found: Sequence[tuple[str, Reproducer]]) -> str:
    """The finding as the terminal shows it, each failing probe's reproducer after it."""
    lines = [outcome.render()]
    for probe_id, repro in found:
        said = f" (the harness got {repro.code})" if repro.code else ""
        lines.append(f"Reproduce {probe_id}{said}:")
        lines += [f"  {text}" for text in repro.lines()]
    return "\n".join(lines)


def rerun_line(target: str, seed: int, profile: str, configs: Sequence[str], test: str) -> str:
    """``pytest --hipaa-target=... --hipaa-seed=N -k test_X``: this control alone again."""
    words = ["pytest", f"--hipaa-target={target}", f"--hipaa-seed={seed}"]
    if profile:
        words.append(f"--hipaa-profile={profile}")
    words += [f"--hipaa-config={c}" for c in configs]
    name = test.rpartition("::")[2]
    return line([*words, "-k", name] if name else words)


def reproducers(outcome: Outcome, run: Run, ctx: Context) -> tuple[tuple[str, Reproducer], ...]:
    """Probe ID -> reproducer, for every FAIL probe of ``outcome``."""
    log: SentLog | None = getattr(getattr(run, "caller", None), "sent", None)
    out = []
    for probe in outcome.probes:
        if probe.status is not Status.FAIL:
            continue
        failing = [
            o
            for o in outcome.observations
            if o.status is Status.FAIL and _probe_id(outcome.control.id, o.ref) == probe.id
        ]
        found = None
        for o in failing:
            rid = o.request_id or ""
            sent = log.get(rid) if log is not None and rid else None
            if sent is not None:
                found = reproduce(rid, sent, run, ctx)
                break
            raw = RAW.get(rid) if rid else None
            if raw is not None:
                found = reproduce_raw(rid, raw, ctx)
                break
        if found is None:
            why = "no single call of the run reproduces it" if failing else "no call failed"
            found = Reproducer(rerun=ctx.rerun, note=f"{why}: run the control again")
        out.append((probe.id, found))
    return tuple(out)


def _probe_id(control_id: str, ref: str) -> str:
    return f"{control_id}({ref})" if ref else control_id


def reproduce(request_id: str, sent: Sent, run: Run, ctx: Context) -> Reproducer:
    """The reproducer of one remembered call."""
    base = Reproducer(
        code=sent.answered, request_id=request_id, method=sent.method, rerun=ctx.rerun
    )
    if sent.requests is None:
        note = (
            "the request was a stream fed as it went, or too large to keep: run the control again"
        )
        return replace(base, note=note)
    leak = _leaks(sent, ctx)
    if leak:
        return replace(base, note=f"the request carries {leak}: run the control again")
    headers, fill, notes = _headers(sent, ctx)
    transport, tnotes = _transport(sent, ctx)
    notes += tnotes
    replay = _replay_line(sent, ctx, headers, transport)
    json_text, why = _json(sent, run)
    if json_text:
        headers = [Arg(f"{ctx.request_id_key}: {request_id}"), *headers]
    grpcurl = _grpcurl_line(sent, ctx, headers, transport, json_text) if json_text else ""
    if why:
        notes.append(why)
    return replace(base, grpcurl=grpcurl, replay=replay, fill=fill, note="; ".join(notes))


def reproduce_raw(request_id: str, raw: RawSent, ctx: Context) -> Reproducer:
    """The reproducer of one remembered raw HTTP/2 request: a ``replay --frames`` line."""
    base = Reproducer(code=raw.answered, request_id=request_id, method=raw.path, rerun=ctx.rerun)
    leak = _leaks(Sent(raw.path, (raw.body or b"",), raw.headers), ctx)
    if leak:
        return replace(base, note=f"the request carries {leak}: run the control again")
    if _compressed(raw.headers):  # the scan above cannot see into a compressed body
        return replace(base, note="the request body is compressed: run the control again")
    headers, fill, notes = _raw_headers(raw, ctx)
    text = frames_text(replace(raw, headers=headers))
    if len(text) > MAX_FRAMES_TEXT:
        why = f"the request is over {MAX_FRAMES_TEXT // 1024} KiB even deflated"
        return replace(base, note=f"{why}: run the control again")
    channel = PRINCIPAL if raw.principal else DEFAULT
    transport, tnotes = _transport(
        Sent(raw.path, None, principal=raw.principal, channel=channel), ctx
    )
    words: list[str | Arg] = ["hipaa-grpc", "replay", ctx.address, "--frames", text]
    for flag, value in transport.items():
        words += [f"--{flag}"] + ([value] if value else [])
    words += ["--timeout", f"{raw.timeout_s:g}"]
    if raw.answered:
        words += ["--expect", raw.answered]
    notes.append(
        "raw HTTP/2: the same header list and body on a new connection"
        + (", the server's SETTINGS acknowledged first" if raw.settings_first else "")
    )
    if fill:
        notes.append("export the placeholders: the replay reads them from its environment")
    return replace(base, replay=line(words), fill=fill, note="; ".join(notes + tnotes))


def _raw_headers(
    raw: RawSent, ctx: Context
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...], list[str]]:
    """The header list with credentials as ``${NAME}``; the placeholders; notes."""
    out: list[tuple[str, str]] = []
    fill: list[str] = []
    notes: list[str] = []
    for key, value in raw.headers:
        for principal, token in sorted(ctx.tokens.items(), key=lambda kv: -len(kv[1])):
            if token and token in value:
                name = placeholder(principal)
                value = value.replace(token, "${" + name + "}")
                fill += [name] if name not in fill else []
        if JWT.search(value):
            value = JWT.sub("${" + FORGED + "}", value)
            if FORGED not in fill:
                fill.append(FORGED)
                notes.append(
                    f"${FORGED}: a token the harness made for this probe (the re-run makes it)"
                )
        out.append((key, value))
    return tuple(out), tuple(fill), notes


def _compressed(headers: Sequence[tuple[str, str | bytes]]) -> bool:
    """Whether a raw request declares a ``grpc-encoding`` other than identity."""
    return any(
        k.lower() == "grpc-encoding" and str(v).strip().lower() not in ("", "identity")
        for k, v in headers
    )


def _leaks(sent: Sent, ctx: Context) -> str:
    """What in the call must not be written: a canary or a secret, in words; else ``""``."""
    blobs = list(sent.requests or ())
    blobs += [v if isinstance(v, bytes) else v.encode() for _, v in sent.metadata]
    secrets = known_secrets(ctx.tokens.values())
    for i, blob in enumerate(blobs):
        if ctx.canaries is not None and ctx.canaries.scan(blob, "request"):
            return "a synthetic PHI canary"
        if i < len(sent.requests or ()):
            text = blob.decode("utf-8", "replace")
            if JWT.search(text) or any(s in text for s in secrets):
                return "a token in its body"
    return ""


def _headers(sent: Sent, ctx: Context) -> tuple[list[Arg], tuple[str, ...], list[str]]:
    """``key: value`` words, credentials as placeholders; the placeholders; notes."""
    words: list[Arg] = []
    fill: list[str] = []
    notes: list[str] = []
    for key, value in sent.metadata:
        if isinstance(value, bytes):
            words.append(Arg(f"{key}: {base64.b64encode(value).decode()}"))
            continue
        text, names = value, []
        for principal, token in sorted(ctx.tokens.items(), key=lambda kv: -len(kv[1])):
            if token and token in text:
                name = placeholder(principal)
                text = text.replace(token, f"${name}")
                names.append(name)
        if JWT.search(text):
            text = JWT.sub(f"${FORGED}", text)
            names.append(FORGED)
            notes.append(
                f"${FORGED}: a token the harness made for this probe (the re-run makes it)"
            )
        words.append(Arg(f"{key}: {text}", tuple(dict.fromkeys(names))))
        fill += [n for n in names if n not in fill]
    return words, tuple(fill), notes


def _transport(sent: Sent, ctx: Context) -> tuple[dict[str, str | None], list[str]]:
    """How to reach the target: plaintext, CA, client certificate, authority; notes."""
    if ctx.transport is Transport.H2C:
        return {"plaintext": ""}, []
    notes = []
    flags: dict[str, str | None] = {}
    if ctx.cacert:
        flags["cacert"] = ctx.cacert
    else:
        flags["insecure"] = ""
        notes.append("no tls.ca_bundle: the presented certificate is trusted, as the run did")
    cert = ctx.client
    if sent.channel == PRINCIPAL and sent.principal in ctx.principal_certs:
        cert = ctx.principal_certs[sent.principal]
    if sent.channel == OTHER:
        notes.append("the check used a channel of its own (another client certificate or none)")
    if cert is not None:
        flags["cert"], flags["key"] = cert
    if ctx.authority:
        flags["authority"] = ctx.authority
    return flags, notes


def _replay_line(
    sent: Sent, ctx: Context, headers: list[Arg], transport: dict[str, str | None]
) -> str:
    words: list[str | Arg] = ["hipaa-grpc", "replay", ctx.address, "--method", sent.method]
    for flag, value in transport.items():
        words += [f"--{flag}"] + ([value] if value else [])
    for h in headers:
        if not h.text.lower().startswith(f"{ctx.request_id_key.lower()}:"):
            words += ["-H", h]
    words += ["--request-id-key", ctx.request_id_key]
    for message in sent.requests or ():
        words += ["--request-b64", base64.b64encode(message).decode()]
    words += ["--timeout", f"{sent.timeout_s:g}"]
    if sent.answered:
        words += ["--expect", sent.answered]
    return line(words)


def _grpcurl_line(
    sent: Sent,
    ctx: Context,
    headers: list[Arg],
    transport: dict[str, str | None],
    json_text: str,
) -> str:
    words: list[str | Arg] = ["grpcurl"]
    for flag, value in transport.items():
        words += [f"-{flag}"] + ([value] if value else [])
    if ctx.protoset:
        words += ["-protoset", ctx.protoset]
    for h in headers:
        words += ["-H", h]
    words += ["-max-time", f"{sent.timeout_s:g}", "-d", json_text, ctx.address]
    words.append(sent.method.lstrip("/"))
    return line(words)


def _json(sent: Sent, run: Run) -> tuple[str, str]:
    """The request as grpcurl's ``-d`` JSON, or ``""`` and why JSON cannot carry it."""
    catalogue = run.catalogue()
    if catalogue is None:
        return "", "no descriptors: only the replay line carries the request"
    try:
        method = catalogue.method(sent.method)
        cls = catalogue.message_class(method.input_type)
    except KeyError:
        return "", f"{sent.method} is not in the descriptors: only the replay line carries it"
    requests = sent.requests or ()
    if len(requests) != 1 and not method.client_streaming:
        return "", f"{len(requests)} messages to a unary-request method: only the replay line"
    texts = []
    for blob in requests:
        msg = cls()
        try:
            msg.ParseFromString(blob)
        except DecodeError:
            return "", "the request is not a valid message: only the replay line carries it"
        try:
            text = json_format.MessageToJson(msg, indent=None)
            again = json_format.Parse(text, cls())
        except (json_format.Error, ValueError):
            return "", "JSON cannot carry this request: only the replay line carries it"
        if blob not in (again.SerializeToString(), again.SerializeToString(deterministic=True)):
            return "", "JSON would not give back the exact bytes: only the replay line carries them"
        texts.append(text)
    return "".join(texts), ""
