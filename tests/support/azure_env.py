"""Azure for the tests: Azurite (the Blob emulator) over HTTPS with its OAuth mode, and the
one stand-in allowed, an Entra ID token endpoint (Entra cannot run locally).

Usage: azure_env.py WORKDIR
WORKDIR holds cert.pem and key.pem (the test's self-signed certificate for 127.0.0.1) and
manifest.json: [{"container", "name", "file", "content_type", "cache_control",
"content_encoding", "tier"}], the blobs to upload (with the account key, as a customer
would). Prints one JSON line: the endpoints, the SAS strings the tests use, then serves
until its stdin closes, and stops Azurite.

Token endpoint (HTTPS, POST /{directory}/oauth2/v2.0/token): an unsigned JWT Azurite's
`--oauth basic` accepts, valid for an hour; directory "no-consent" answers AADSTS700016 as
Entra does for an app no administrator of that directory consented to; "short-lived" gives
tokens of 300 s, which the SDK treats as due for refresh at once. A plain HTTP control port
answers GET /count/{directory} with the number of token requests made for it.
"""

import base64
import datetime
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from azure.storage.blob import (
    BlobServiceClient,
    ContainerSasPermissions,
    ContentSettings,
    generate_container_sas,
)

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
APP_OID = "00000000-0000-0000-0000-0000000000aa"

workdir = sys.argv[1]
cert = os.path.join(workdir, "cert.pem")
key = os.path.join(workdir, "key.pem")
counts = {}
lock = threading.Lock()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(obj):
    raw = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Token(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = self.rfile.read(length).decode()
        directory = self.path.strip("/").split("/")[0]
        with lock:
            counts[directory] = counts.get(directory, 0) + 1
        if directory == "no-consent":
            body = {
                "error": "unauthorized_client",
                "error_description": "AADSTS700016: Application with identifier 'bucketfront-app' was not found in the directory 'no-consent'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
                "error_codes": [700016],
            }
            return self.answer(400, body)
        if "client_secret=" not in form and "client_assertion=" not in form:
            return self.answer(401, {"error": "invalid_client", "error_description": "AADSTS7000216: client_assertion, client_secret or request is required."})
        life = 300 if directory == "short-lived" else 3600
        now = int(time.time())
        claims = {
            "aud": "https://storage.azure.com",
            "iss": f"https://sts.windows.net/{directory}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + life,
            "oid": APP_OID,
            "tid": directory,
            "appid": "bucketfront-app",
        }
        token = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.{b64(b'unsigned')}"
        self.answer(
            200,
            {
                "token_type": "Bearer",
                "expires_in": life,
                "ext_expires_in": life,
                "access_token": token,
            },
        )

    def answer(self, status, body):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


class Control(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        directory = self.path.rsplit("/", 1)[-1]
        with lock:
            raw = str(counts.get(directory, 0)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()


blob_port = free_port()
azurite = subprocess.Popen(
    [
        "azurite-blob",
        "--blobHost", "127.0.0.1",
        "--blobPort", str(blob_port),
        "--oauth", "basic",
        "--cert", cert,
        "--key", key,
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
        "--silent",
    ],
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)
try:
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", blob_port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline or azurite.poll() is not None:
                raise SystemExit("azurite did not start: npm i -g azurite (scripts/test does)")
            time.sleep(0.05)

    token_server = ThreadingHTTPServer(("127.0.0.1", 0), Token)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    token_server.socket = tls.wrap_socket(token_server.socket, server_side=True)
    serve(token_server)
    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    serve(control)

    endpoint = f"https://127.0.0.1:{blob_port}/{ACCOUNT}"
    service = BlobServiceClient(
        endpoint,
        credential={"account_name": ACCOUNT, "account_key": KEY},
        connection_verify=cert,
    )
    with open(os.path.join(workdir, "manifest.json")) as f:
        manifest = json.load(f)
    made = set()
    for blob in manifest:
        container = service.get_container_client(blob["container"])
        if blob["container"] not in made:
            container.create_container()
            made.add(blob["container"])
        with open(os.path.join(workdir, blob["file"]), "rb") as data:
            container.upload_blob(
                blob["name"],
                data,
                overwrite=True,
                content_settings=ContentSettings(
                    content_type=blob.get("content_type"),
                    cache_control=blob.get("cache_control"),
                    content_encoding=blob.get("content_encoding"),
                ),
            )
        if blob.get("tier"):
            container.get_blob_client(blob["name"]).set_standard_blob_tier(blob["tier"])

    now = datetime.datetime.now(datetime.timezone.utc)

    def sas(container, permission, start, expiry):
        return generate_container_sas(
            ACCOUNT, container, account_key=KEY, permission=permission, start=start, expiry=expiry
        )

    hour = datetime.timedelta(hours=1)
    print(
        json.dumps(
            {
                "endpoint": endpoint,
                "account": ACCOUNT,
                "authority": f"https://127.0.0.1:{token_server.server_address[1]}",
                "control": f"http://127.0.0.1:{control.server_address[1]}",
                "sas_read": sas("shared", ContainerSasPermissions(read=True), now - hour, now + hour),
                "sas_list_only": sas("shared", ContainerSasPermissions(list=True), now - hour, now + hour),
                "sas_expired": sas("shared", ContainerSasPermissions(read=True), now - 2 * hour, now - hour),
            }
        ),
        flush=True,
    )
    sys.stdin.read()
finally:
    azurite.terminate()
    try:
        azurite.wait(timeout=10)
    except subprocess.TimeoutExpired:
        azurite.kill()
