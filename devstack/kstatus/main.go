// kstatus-check: how Flux (kstatus) and Argo CD (a Lua health check) read objects.
//
// Reads Kubernetes objects as JSON on stdin (one object, a List, or several objects one after another) and
// prints one JSON line per object: sigs.k8s.io/cli-utils pkg/kstatus/status.Compute's status and message, and,
// with -lua, the Argo CD health check's status and message, the script run as Argo CD runs it (gopher-lua,
// the object as the global `obj`, the returned table read for `status` and `message`).
//
// Built by devstack/build.sh (build_kstatus) from the Go module proxy; used by tests/e2e/test_status_kstatus.py.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sjson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind           string `json:"kind"`
	Namespace      string `json:"namespace,omitempty"`
	Name           string `json:"name"`
	KStatus        string `json:"kstatus"`
	KStatusMessage string `json:"kstatusMessage"`
	ArgoStatus     string `json:"argoStatus,omitempty"`
	ArgoMessage    string `json:"argoMessage,omitempty"`
}

// toLua converts decoded JSON into Lua values as Argo CD's lua VM does (maps and arrays become tables).
func toLua(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case map[string]interface{}:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	default:
		return lua.LString(fmt.Sprint(v))
	}
}

func argoHealth(script string, obj map[string]interface{}) (string, string, error) {
	l := lua.NewState()
	defer l.Close()
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return "", "", err
	}
	table, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", errors.New("the health script returned no table")
	}
	return lua.LVAsString(table.RawGetString("status")), lua.LVAsString(table.RawGetString("message")), nil
}

func check(script string, obj map[string]interface{}) (result, error) {
	u := &unstructured.Unstructured{Object: obj}
	res := result{Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
	computed, err := status.Compute(u)
	if err != nil {
		return res, fmt.Errorf("kstatus.Compute %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	res.KStatus, res.KStatusMessage = computed.Status.String(), computed.Message
	if script != "" {
		if res.ArgoStatus, res.ArgoMessage, err = argoHealth(script, obj); err != nil {
			return res, fmt.Errorf("health script on %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
	}
	return res, nil
}

func main() {
	luaPath := flag.String("lua", "", "an Argo CD health check script to run on each object")
	flag.Parse()
	script := ""
	if *luaPath != "" {
		raw, err := os.ReadFile(*luaPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		script = string(raw)
	}
	decoder := json.NewDecoder(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "decode:", err)
			os.Exit(2)
		}
		var obj map[string]interface{}
		if err := k8sjson.Unmarshal(raw, &obj); err != nil { // whole numbers as int64, as the API machinery reads them
			fmt.Fprintln(os.Stderr, "decode:", err)
			os.Exit(2)
		}
		objects := []map[string]interface{}{obj}
		if items, ok := obj["items"].([]interface{}); ok {
			objects = objects[:0]
			for _, item := range items {
				if m, ok := item.(map[string]interface{}); ok {
					objects = append(objects, m)
				}
			}
		}
		for _, o := range objects {
			res, err := check(script, o)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			if err := out.Encode(res); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	}
}
