// The JavaScript consumer of the local stack's Pod Identity tests: AWS SDK for JavaScript v3 with its
// default credential chain and nothing else (no code for this operator), calling STS GetCallerIdentity
// every INTERVAL seconds (default 10) and printing one JSON line per call. The SDK itself reads the
// endpoint (AWS_ENDPOINT_URL_STS) and the region (AWS_REGION).
import { STSClient, GetCallerIdentityCommand } from "@aws-sdk/client-sts";

// pid 1 of its container: without a handler SIGTERM would be ignored until the grace period ends
process.on("SIGTERM", () => process.exit(0));

const seconds = Number.parseFloat(process.env.INTERVAL ?? "");
const every = (Number.isFinite(seconds) && seconds > 0 ? seconds : 10) * 1000;
const client = new STSClient({});

function emit(line) {
  process.stdout.write(JSON.stringify({ sdk: "js", ...line, t: Math.floor(Date.now() / 1000) }) + "\n");
}

for (;;) {
  try {
    const identity = await client.send(new GetCallerIdentityCommand({}));
    const line = { ok: true, arn: identity.Arn };
    // the client's memoized provider: no fetch while the credentials are outside its refresh window
    const creds = await client.config.credentials();
    line.access_key_id = creds.accessKeyId;
    if (creds.expiration) line.expiration = creds.expiration.toISOString();
    emit(line);
  } catch (err) {
    emit({ ok: false, error: `${err?.name ?? "Error"}: ${err?.message ?? err}` });
  }
  await new Promise((resolve) => setTimeout(resolve, every));
}
