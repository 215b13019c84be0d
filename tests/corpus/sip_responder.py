#!/usr/bin/env python3
"""A tiny SIP registrar for the corpus runs: just enough answers for scanners to go on.

It runs inside the corpus script's darknet namespace only. Scanners such as svwar, svcrack and
nmap's sip-* scripts stop after their first probe unless something answers; this gives them a
server that behaves like a small PBX:

- OPTIONS: 200 OK with an Allow header (sip-methods reads it).
- REGISTER for an extension in EXTENSIONS: 401 with a digest challenge; with credentials, 200 if
  the password is PASSWORD, else 401 again (svcrack and sip-brute go on guessing).
- REGISTER for any other user: 404 Not Found (svwar and sip-enum-users tell users apart by it).
- anything else: 501 Not Implemented.

It stops by itself after --seconds; it never sends to anything but the source of a request.
"""

import argparse
import hashlib
import re
import socket
import time

EXTENSIONS = {"100", "101", "105"}
PASSWORD = "110"
REALM = "corpus.invalid"
NONCE = "4d1f0c6b7a5e3d2c"


def header(message: str, *names: str) -> str:
    """First value of a header, by any of its names (long or compact), case-insensitive."""
    for line in message.split("\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(":")
        if name.strip().lower() in names:
            return value.strip()
    return ""


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def password_ok(method: str, authorization: str) -> bool:
    """Checks a digest response for PASSWORD, with and without qop (svcrack sends qop=auth
    without nc/cnonce, which servers treat as the RFC 2069 form)."""
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', authorization))
    user, uri, response = fields.get("username", ""), fields.get("uri", ""), fields.get("response", "")
    ha1 = md5(f"{user}:{REALM}:{PASSWORD}")
    ha2 = md5(f"{method}:{uri}")
    candidates = {md5(f"{ha1}:{NONCE}:{ha2}")}
    if "nc" in fields and "cnonce" in fields:
        candidates.add(md5(f"{ha1}:{NONCE}:{fields['nc']}:{fields['cnonce']}:{fields.get('qop', '')}:{ha2}"))
    return response in candidates


def answer(request: str) -> str:
    request_line = request.split("\r\n", 1)[0]
    method = request_line.split(" ", 1)[0]
    to = header(request, "to", "t")
    user_match = re.search(r"sip:([^@;>]+)@", to)
    user = user_match.group(1) if user_match else ""
    extra = []
    if method == "OPTIONS":
        status = "200 OK"
        extra.append("Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER")
    elif method == "REGISTER":
        authorization = header(request, "authorization", "proxy-authorization")
        if user not in EXTENSIONS:
            status = "404 Not Found"
        elif authorization and password_ok(method, authorization):
            status = "200 OK"
        else:
            status = "401 Unauthorized"
            # Asterisk's layout, algorithm first: nmap's sip.lua only finds the algorithm when a
            # comma follows it.
            extra.append(f'WWW-Authenticate: Digest algorithm=MD5, realm="{REALM}", nonce="{NONCE}"')
    else:
        status = "501 Not Implemented"
    to_tag = to if ";tag=" in to else f"{to};tag={md5(user)[:8]}"
    lines = [f"SIP/2.0 {status}"]
    for via in [line for line in request.split("\r\n") if line.lower().startswith(("via:", "v:"))]:
        lines.append("Via:" + via.split(":", 1)[1])
    lines += [
        f"From: {header(request, 'from', 'f')}",
        f"To: {to_tag}",
        f"Call-ID: {header(request, 'call-id', 'i')}",
        f"CSeq: {header(request, 'cseq')}",
        *extra,
        "Server: corpus-responder",
        "Content-Length: 0",
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, default=5060)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((args.bind, args.port))
    deadline = time.monotonic() + args.seconds
    print("ready", flush=True)
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(65535)
        except socket.timeout:
            break
        text = data.decode("utf-8", "replace")
        if not text.startswith("SIP/2.0") and " SIP/2.0" in text.split("\r\n", 1)[0]:
            sock.sendto(answer(text).encode(), peer)


if __name__ == "__main__":
    main()
