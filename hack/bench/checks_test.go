package main

import "testing"

// The checks of a phase are the difference of two readings of the apiserver's metrics page.
func TestChecksSince(t *testing.T) {
	before := checksIn([]byte(`# HELP apiserver_storage_consistency_checks_total [ALPHA] Counter for status of consistency checks between etcd and watch cache
# TYPE apiserver_storage_consistency_checks_total counter
apiserver_storage_consistency_checks_total{group="",resource="pods",status="success"} 2
apiserver_storage_consistency_checks_total{group="split.smi-spec.io",resource="trafficsplits",status="success"} 3
apiserver_request_total{code="200"} 9
`))
	now := checksIn([]byte(`apiserver_storage_consistency_checks_total{group="",resource="pods",status="success"} 3
apiserver_storage_consistency_checks_total{group="split.smi-spec.io",resource="trafficsplits",status="success"} 5
apiserver_storage_consistency_checks_total{group="split.smi-spec.io",resource="trafficsplits",status="error"} 1
apiserver_storage_consistency_checks_total{group="networking.istio.io",resource="virtualservices",status="success"} 4
`))
	want := "8 consistency checks (3 of SMI resources, 1 not passed): pods 1, trafficsplits.split.smi-spec.io 3, virtualservices.networking.istio.io 4"
	if got := checksSince(before, now); got != want {
		t.Errorf("checksSince = %q\nwant %q", got, want)
	}
	if got := checksSince(now, now); got != "no consistency check" {
		t.Errorf("checksSince(same) = %q", got)
	}
}
