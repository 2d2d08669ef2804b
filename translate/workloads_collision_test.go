package translate

import (
	"reflect"
	"testing"
)

// Two different stable-label sets with the same labelsString: the memo hands the second the first's
// (empty) clash list, and its selector also selects a workload of another ServiceAccount.
func TestResolveSelectorsLabelsStringCollision(t *testing.T) {
	for _, ws := range [][]Workload{
		{ // NUL in a value: the second set is a valid Kubernetes label set
			{Name: "Deployment/a", ServiceAccount: "web", Labels: map[string]string{"app": "web\x00version=v1"}},
			{Name: "Deployment/b", ServiceAccount: "web", Labels: map[string]string{"app": "web", "version": "v1"}},
			{Name: "Deployment/other", ServiceAccount: "api", Labels: map[string]string{"app": "web", "version": "v1"}},
		},
		{ // '=' in a key
			{Name: "Deployment/a", ServiceAccount: "web", Labels: map[string]string{"app=web": "v1"}},
			{Name: "Deployment/b", ServiceAccount: "web", Labels: map[string]string{"app": "web=v1"}},
			{Name: "Deployment/other", ServiceAccount: "api", Labels: map[string]string{"app": "web=v1"}},
		},
	} {
		wantSel, wantFind := resolveSelectorsOld("web", ws)
		gotSel, gotFind := ResolveSelectors("web", ws)
		if !reflect.DeepEqual(gotSel, wantSel) || !reflect.DeepEqual(gotFind, wantFind) {
			t.Errorf("got %q %q\nwant %q %q", gotSel, gotFind, wantSel, wantFind)
		}
	}
}
