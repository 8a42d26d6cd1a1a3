package edgeconfig

import (
	"os"
	"testing"
)

func TestEnsureAgent(t *testing.T) {
	d, err := Parse([]byte("hostname = \"a\"\n\n[provisioning]\nsource = \"none\""))
	if err != nil {
		t.Fatal(err)
	}
	added, err := d.EnsureAgent("example.com/agent:1.5")
	if err != nil || !added {
		t.Fatalf("EnsureAgent on a file without [agent] = %v, %v; want added", added, err)
	}
	if err := Validate(d.Bytes()); err != nil {
		t.Errorf("after EnsureAgent: %v\n%s", err, d.Bytes())
	}
	for _, tc := range []struct {
		path []string
		want any
	}{
		{[]string{"agent", "name"}, "edgeAgent"},
		{[]string{"agent", "type"}, "docker"},
		{[]string{"agent", "config", "image"}, "example.com/agent:1.5"},
		{[]string{"agent", "env", "storageFolder"}, "/iotedge/storage"},
		{[]string{"provisioning", "source"}, "none"},
	} {
		if got := lookup(d.tree, tc.path...); got != tc.want {
			t.Errorf("%v = %v, want %v", tc.path, got, tc.want)
		}
	}
	before := string(d.Bytes())
	if added, err := d.EnsureAgent("other"); added || err != nil || string(d.Bytes()) != before {
		t.Errorf("second EnsureAgent = %v, %v; want nothing done", added, err)
	}

	// An operator's [agent] stays as it is.
	template, err := os.ReadFile("testdata/in/template.toml")
	if err != nil {
		t.Fatal(err)
	}
	d, err = Parse(template)
	if err != nil {
		t.Fatal(err)
	}
	if added, err := d.EnsureAgent("other"); added || err != nil || string(d.Bytes()) != string(template) {
		t.Errorf("EnsureAgent on the template = %v, %v; want nothing done", added, err)
	}

}
