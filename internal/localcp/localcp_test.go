package localcp

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// A restart of kube-apiserver keeps etcd's data and the clients' credentials; stopping the control
// plane leaves no process of it behind.
func TestRestartAndStop(t *testing.T) {
	cp, err := Start("")
	if err != nil {
		t.Fatal(err)
	}
	dir := cp.tmpDir
	defer func() { _ = cp.Stop() }()
	if pids := processesWith(dir); len(pids) < 3 {
		t.Fatalf("processes of the control plane: %v, want etcd, kube-apiserver and kube-controller-manager", pids)
	}
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kept"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := processesWith(cp.env.ControlPlane.APIServer.CertDir, "kube-apiserver")
	if len(before) != 1 {
		t.Fatalf("kube-apiserver processes: %v", before)
	}
	if err := cp.RestartAPIServer(); err != nil {
		t.Fatal(err)
	}
	after := processesWith(cp.env.ControlPlane.APIServer.CertDir, "kube-apiserver")
	if len(after) != 1 || after[0] == before[0] {
		t.Errorf("kube-apiserver processes after the restart: %v (before: %v)", after, before)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Errorf("after the restart: %v", err)
	}
	if err := cp.Stop(); err != nil {
		t.Fatal(err)
	}
	if pids := processesWith(dir); len(pids) > 0 {
		t.Errorf("processes left after Stop: %v", pids)
	}
}
