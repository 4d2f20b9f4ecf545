"""The Python consumer of the local stack's Pod Identity tests, run in the operator's image (boto3 is in it).

boto3's default credential chain and nothing else: no code for this operator. Every ``INTERVAL`` seconds
(default 10) it calls STS GetCallerIdentity, whose endpoint (``AWS_ENDPOINT_URL_STS``) and region
(``AWS_REGION``) botocore reads itself, and prints one JSON line. One client for the pod's whole life, so
a rotation reaches it only the way it reaches any boto3 program: through the SDK's own refresh.
"""

import json
import os
import signal
import sys
import time

import boto3


def emit(line: dict[str, object]) -> None:
    print(json.dumps({"sdk": "python", **line, "t": int(time.time())}), flush=True)


def main() -> None:
    # pid 1 of its container: without a handler SIGTERM would be ignored until the grace period ends
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        every = float(os.environ.get("INTERVAL", "10"))
    except ValueError:
        every = 10.0
    # botocore's own region variable is AWS_DEFAULT_REGION; AWS_REGION is the one the other SDKs read
    session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
    sts = None
    while True:
        try:
            if sts is None:  # boto3 resolves the credential chain when it makes the client: a failure there is
                sts = session.client("sts")  # one line too, and the next loop tries again
            arn = sts.get_caller_identity()["Arn"]
            line: dict[str, object] = {"ok": True, "arn": arn}
            creds = session.get_credentials()
            if creds is not None:
                line["access_key_id"] = creds.get_frozen_credentials().access_key
                # RefreshableCredentials keep their expiry here (botocore has no public accessor)
                expiry = getattr(creds, "_expiry_time", None)
                if expiry is not None:
                    line["expiration"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
            emit(line)
        except Exception as exc:  # every failure is one line, and the loop goes on
            emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        time.sleep(every if every > 0 else 10.0)


if __name__ == "__main__":
    main()
