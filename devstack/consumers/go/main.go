// The Go consumer of the local stack's Pod Identity tests: AWS SDK for Go v2 with its default credential
// chain and nothing else (no code for this operator), calling STS GetCallerIdentity every INTERVAL seconds
// (default 10) and printing one JSON line per call. The endpoint comes from AWS_ENDPOINT_URL_STS and the
// region from AWS_REGION, both read by the SDK itself.
package main

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func emit(line map[string]any) {
	line["sdk"] = "go"
	line["t"] = time.Now().Unix()
	out, _ := json.Marshal(line)
	os.Stdout.Write(append(out, '\n'))
}

func interval() time.Duration {
	if s, err := strconv.ParseFloat(os.Getenv("INTERVAL"), 64); err == nil && s > 0 {
		return time.Duration(s * float64(time.Second))
	}
	return 10 * time.Second
}

func main() {
	ctx := context.Background()
	every := interval()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		emit(map[string]any{"ok": false, "error": "load config: " + err.Error()})
		os.Exit(1)
	}
	client := sts.NewFromConfig(cfg)
	for {
		call, cancel := context.WithTimeout(ctx, 30*time.Second)
		identity, err := client.GetCallerIdentity(call, &sts.GetCallerIdentityInput{})
		if err != nil {
			emit(map[string]any{"ok": false, "error": err.Error()})
		} else {
			line := map[string]any{"ok": true, "arn": *identity.Arn}
			// the SDK's credential cache answers this without a fetch while the credentials are fresh
			if creds, err := cfg.Credentials.Retrieve(call); err == nil {
				line["access_key_id"] = creds.AccessKeyID
				if creds.CanExpire { // the cache's: the credentials' Expiration less its 5-minute ExpiryWindow
					line["expiration"] = creds.Expires.UTC().Format(time.RFC3339)
				}
			}
			emit(line)
		}
		cancel()
		time.Sleep(every)
	}
}
