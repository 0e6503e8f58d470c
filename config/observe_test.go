package config

import (
	"bytes"
	"testing"
)

func TestAccessLogFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		path string
		keys bool
		err  bool
	}{
		{name: "default off", path: "off"},
		{name: "file", args: []string{"--access-log", "/var/log/meshlb/access.log"}, path: "/var/log/meshlb/access.log"},
		{name: "stdout with keys", args: []string{"--access-log=stdout", "--access-log-keys"}, path: "stdout", keys: true},
		{name: "env", env: []string{"MESHLB_ACCESS_LOG=stdout"}, path: "stdout"},
		{name: "empty", args: []string{"--access-log="}, err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseNode(append([]string{"--name", "a"}, tc.args...), tc.env, &bytes.Buffer{})
			if tc.err {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Node.AccessLog != tc.path || c.Node.AccessLogKeys != tc.keys {
				t.Fatalf("access log %q keys %v; want %q %v", c.Node.AccessLog, c.Node.AccessLogKeys, tc.path, tc.keys)
			}
		})
	}
}
