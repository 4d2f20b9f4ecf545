// The Java consumer of the local stack's Pod Identity tests: AWS SDK for Java v2 with its default credential
// chain and nothing else (no code for this operator), calling STS GetCallerIdentity every INTERVAL seconds
// (default 10) and printing one JSON line per call. The SDK itself reads the endpoint (AWS_ENDPOINT_URL_STS)
// and the region (AWS_REGION).
import java.time.Instant;
import software.amazon.awssdk.identity.spi.AwsCredentialsIdentity;
import software.amazon.awssdk.services.sts.StsClient;
import software.amazon.awssdk.services.sts.model.GetCallerIdentityResponse;

public final class Consumer {
    private static String quote(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') {
                out.append('\\').append(c);
            } else if (c < 0x20) {
                out.append(String.format("\\u%04x", (int) c));
            } else {
                out.append(c);
            }
        }
        return out.append('"').toString();
    }

    private static void emit(String fields) {
        System.out.println("{\"sdk\": \"java\", " + fields + ", \"t\": " + Instant.now().getEpochSecond() + "}");
        System.out.flush();
    }

    public static void main(String[] args) throws InterruptedException {
        double seconds = 10;
        try {
            seconds = Double.parseDouble(System.getenv().getOrDefault("INTERVAL", "10"));
        } catch (NumberFormatException e) {
            seconds = 10;
        }
        long every = (long) ((seconds > 0 ? seconds : 10) * 1000);
        StsClient sts = StsClient.create();
        while (true) {
            try {
                GetCallerIdentityResponse identity = sts.getCallerIdentity();
                // the default provider caches: no fetch while the credentials are fresh
                AwsCredentialsIdentity creds = sts.serviceClientConfiguration().credentialsProvider()
                        .resolveIdentity().join();
                String line = "\"ok\": true, \"arn\": " + quote(identity.arn())
                        + ", \"access_key_id\": " + quote(creds.accessKeyId());
                if (creds.expirationTime().isPresent()) {
                    line += ", \"expiration\": " + quote(creds.expirationTime().get().toString());
                }
                emit(line);
            } catch (RuntimeException e) {
                emit("\"ok\": false, \"error\": " + quote(e.getClass().getSimpleName() + ": " + e.getMessage()));
            }
            Thread.sleep(every);
        }
    }
}
