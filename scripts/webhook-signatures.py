"""Checks syncbrok's deliveries with independent implementations: every signature with Standard
Webhooks' own package (`standardwebhooks`), and every batch with the CloudEvents SDK
(`cloudevents`). A subscriber verifies every delivery and refuses (401) any whose signature
does not verify; with max_attempts 1, a refused delivery would be a dead letter. A second
subscriber takes batches: each must verify as a whole and parse, event by event, as CloudEvents
carrying exactly the messages published. A third subscriber has its secret rotated: during the
grace period every delivery must verify with the old secret and with the new one, each on its
own; after a rotation without grace, with the new one only. Run by scripts/webhook-signatures.sh, which starts
the broker."""

import base64
import http.server
import json
import sys
import threading
import time
import urllib.request

from cloudevents.core.formats.json import JSONFormat
from standardwebhooks.webhooks import Webhook

SECRET = "whsec_" + base64.b64encode(b"an independent check of syncbrok").decode()
broker = sys.argv[1]
verified, refused = [], []
# Batches: (batch id, size header, [(message id, data, event)]).
batches = []
# Secret rotation: the secrets a delivery is checked with, and which of them verify it.
ROTATED = ["whsec_" + base64.b64encode(f"rotation secret {n}".encode()).decode() for n in range(3)]
rotated = []  # (webhook-id, [verifies with ROTATED[n] for each n])
BATCH = "application/cloudevents-batch+json"


class Subscriber(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path.endswith("/rotated"):
            rotated.append((headers.get("webhook-id"), [verifies(s, body, headers) for s in ROTATED]))
            self.send_response(204)
            self.end_headers()
            return
        try:
            Webhook(SECRET).verify(body, headers, json_parse=False)
            if headers.get("content-type") == BATCH:
                if not batches:
                    # Hold the first batch a while, so that the next ones gather several.
                    time.sleep(0.3)
                events = [JSONFormat().read(None, json.dumps(e)) for e in json.loads(body)]
                batches.append((headers["webhook-id"], headers["syncbrok-batch-size"],
                                [(e.get_id(), e.get_data(), e) for e in events]))
            else:
                verified.append(headers["webhook-id"])
            self.send_response(204)
        except Exception as e:  # any verification or parsing failure
            refused.append((headers.get("webhook-id"), repr(e)))
            self.send_response(401)
        self.end_headers()

    def log_message(self, *args):
        pass


def verifies(secret, body, headers):
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
        return True
    except Exception:
        return False


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

# Batched delivery: one signature over each batch; every event a valid CloudEvent.
call("PUT", "/v1/queues/batched", json.dumps({"retry": {"max_attempts": 1}}).encode())
call("POST", "/v1/queues/batched/subscribers",
     json.dumps({"endpoint": endpoint + "/batched", "secret": SECRET, "max_in_flight": 1,
                 "batch": {"max_messages": 64}}).encode())
published = {}
first = None
for n in range(40):
    body, kind = ((json.dumps({"n": n}).encode(), "application/json") if n % 2
                  else (f"text {n} \u00e9".encode(), "text/plain; charset=utf-8"))
    headers = {"content-type": kind}
    if n == 39:
        headers["syncbrok-parent"] = first
    m = call("POST", "/v1/queues/batched/messages", body, headers)
    first = first or m["id"]
    published[m["id"]] = (body, kind)
deadline = time.time() + 30
while time.time() < deadline and sum(len(b[2]) for b in batches) < len(published) and not refused:
    time.sleep(0.05)
got = {}
for batch_id, size, events in batches:
    if int(size) != len(events):
        refused.append((batch_id, f"syncbrok-batch-size {size} for {len(events)} events"))
    for mid, data, e in events:
        body, kind = published.get(mid, (None, None))
        want = json.loads(body) if body is not None and kind == "application/json" else body
        if e.get_source() != "/queues/batched" or e.get_type() != "syncbrok.message" \
                or e.get_datacontenttype() != kind or data != want \
                or e.get_extension("syncbrokattempt") != 1:
            refused.append((mid, f"event does not carry its message: {e}"))
        got[mid] = e
if refused or sorted(got) != sorted(published):
    print(f"batch check failed: {len(got)} of {len(published)} messages, problems {refused}")
    sys.exit(1)
parented = [e for e in got.values() if e.get_extension("syncbrokparent")]
if len(parented) != 1 or parented[0].get_extension("syncbrokparent") != first:
    print(f"batch check failed: the child's syncbrokparent is wrong: {parented}")
    sys.exit(1)
if max(len(b[2]) for b in batches) < 2:
    print(f"batch check failed: no batch held more than one message: {[len(b[2]) for b in batches]}")
    sys.exit(1)
print(f"webhook batches: {len(published)} messages in {len(batches)} batches, each verified by "
      "standardwebhooks and parsed by the CloudEvents SDK")

# Secret rotation: during the grace both the old and the new secret verify every delivery (the
# package accepts a request when any signature of the header matches); after a rotation
# without grace, only the newest.
call("PUT", "/v1/queues/rotated", json.dumps({"retry": {"max_attempts": 1}}).encode())
sub = call("POST", "/v1/queues/rotated/subscribers",
           json.dumps({"endpoint": endpoint + "/rotated", "secret": ROTATED[0]}).encode())
rotation = call("POST", f"/v1/queues/rotated/subscribers/{sub['id']}/secret",
                json.dumps({"secret": ROTATED[1], "grace": "1h"}).encode())
if not rotation.get("previous_secret_until"):
    print(f"rotation check failed: no grace period shown: {rotation}")
    sys.exit(1)


def publish_rotated(n):
    base = len(rotated)
    for i in range(n):
        call("POST", "/v1/queues/rotated/messages", f"rotated {i}".encode(),
             {"content-type": "text/plain"})
    want = base + n
    deadline = time.time() + 30
    while time.time() < deadline and len(rotated) < want:
        time.sleep(0.05)
    return rotated[base:want]


during = publish_rotated(3)
call("POST", f"/v1/queues/rotated/subscribers/{sub['id']}/secret",
     json.dumps({"secret": ROTATED[2], "grace": "0s"}).encode())
after = publish_rotated(2)
if len(during) != 3 or any(ok != [True, True, False] for _, ok in during) \
        or len(after) != 2 or any(ok != [False, False, True] for _, ok in after):
    print(f"rotation check failed: during the grace {during}, after it {after}")
    sys.exit(1)
print("secret rotation: during the grace every delivery verified by standardwebhooks with the old "
      "and the new secret each, after it with the new one only")
