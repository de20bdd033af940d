"""Checks syncbrok's webhook signatures with an independent implementation of Standard
Webhooks (the `standardwebhooks` package): a subscriber verifies every delivery and refuses
(401) any whose signature does not verify; with max_attempts 1, a refused delivery would be a
dead letter. Run by scripts/webhook-signatures.sh, which starts the broker."""

import base64
import http.server
import json
import sys
import threading
import time
import urllib.request

from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"an independent check of syncbrok").decode()
broker = sys.argv[1]
verified, refused = [], []


class Subscriber(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            Webhook(SECRET).verify(body, headers, json_parse=False)
            verified.append(headers["webhook-id"])
            self.send_response(204)
        except Exception as e:  # any verification failure
            refused.append((headers.get("webhook-id"), repr(e)))
            self.send_response(401)
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Subscriber)
threading.Thread(target=server.serve_forever, daemon=True).start()
endpoint = f"http://127.0.0.1:{server.server_address[1]}/hook"


def call(method, path, body=b"", headers=None):
    req = urllib.request.Request(broker + path, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


call("PUT", "/v1/queues/signed", json.dumps({"retry": {"max_attempts": 1}}).encode())
call("POST", "/v1/queues/signed/subscribers",
     json.dumps({"endpoint": endpoint, "secret": SECRET}).encode())
# UTF-8 bodies only: the package decodes the payload as text before signing it (syncbrok signs
# the raw bytes, which for UTF-8 is the same thing).
bodies = [b"", b"plain text", json.dumps({"order": 7, "note": "\u00e9t\u00e9"}).encode(),
          "\u65e5\u672c \U0001f680 ok".encode(), b"x" * 70000]
ids = [call("POST", "/v1/queues/signed/messages", b, {"content-type": "application/octet-stream"})["id"]
       for b in bodies]
deadline = time.time() + 30
while time.time() < deadline and len(verified) + len(refused) < len(ids):
    time.sleep(0.05)
if refused or sorted(verified) != sorted(ids):
    print(f"signature check failed: verified {len(verified)} of {len(ids)}, refused {refused}")
    sys.exit(1)
print(f"webhook signatures: {len(ids)} deliveries verified by the standardwebhooks package")
