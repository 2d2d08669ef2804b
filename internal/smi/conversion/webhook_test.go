package conversion

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
)

// reviewOf is a ConversionReview of these objects (JSON) to apiVersion to.
func reviewOf(to string, objects ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `{"kind":"ConversionReview","apiVersion":"apiextensions.k8s.io/v1","request":{"uid":"u1","desiredAPIVersion":%q,"objects":[`, to)
	for i, o := range objects {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(o)
	}
	b.WriteString("]}}")
	return []byte(b.String())
}

// routeGroupWithHeaders is a legal HTTPRouteGroup v1alpha2 (headers preserve unknown fields, so
// the apiserver accepts any map there) of about size bytes: one match whose headers are a map of
// many small entries, the shape that costs the most heap per byte when decoded.
func routeGroupWithHeaders(size int) string {
	var b strings.Builder
	b.WriteString(`{"apiVersion":"specs.smi-spec.io/v1alpha2","kind":"HTTPRouteGroup","metadata":{"name":"huge","namespace":"shop"},` +
		`"matches":[{"name":"m","pathRegex":"/x","methods":["GET"],"headers":{`)
	for i := 0; b.Len() < size; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"h%d":"v"`, i)
	}
	b.WriteString(`}}]}`)
	return b.String()
}

const smallSplit = `{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit","metadata":{"name":"s","namespace":"n"},"spec":{"service":"root","backends":[{"service":"v1","weight":1}]}}`

type answer struct {
	code   int
	status string // the ConversionReview's result status, for 200
	msg    string
}

// post sends a body (chunked when chunked: no Content-Length) and reads the answer without
// keeping it: the start (for a message) and the ConversionReview's result status, found as the
// answer streams by.
func post(t *testing.T, url string, body []byte, chunked bool) answer {
	t.Helper()
	var r io.Reader = bytes.NewReader(body)
	if chunked {
		r = io.MultiReader(r) // hides the length: sent chunked
	}
	req, err := http.NewRequest(http.MethodPost, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{code: -1, msg: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	a := answer{code: resp.StatusCode}
	buf := make([]byte, 32<<10)
	var window []byte // what is left of the previous read, for matches across reads
	for {
		n, err := resp.Body.Read(buf)
		if len(a.msg) < 1024 {
			a.msg += string(buf[:min(n, 1024-len(a.msg))])
		}
		window = append(window, buf[:n]...)
		if a.status == "" {
			if i := bytes.Index(window, []byte(`"result":{`)); i >= 0 {
				rest := window[i:]
				switch {
				case bytes.Contains(rest, []byte(`"status":"Success"`)):
					a.status = metav1.StatusSuccess
				case bytes.Contains(rest, []byte(`"status":"Failure"`)):
					a.status = metav1.StatusFailure
				}
			}
		}
		if len(window) > 256 {
			window = append(window[:0], window[len(window)-256:]...)
		}
		if err != nil {
			break
		}
	}
	return a
}

// fullReview posts a review and decodes the whole answer.
func fullReview(t *testing.T, url string, body []byte) *apiextv1.ConversionReview {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewReader(body)) //nolint:noctx // a test server
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("HTTP %d: %s", resp.StatusCode, msg)
	}
	out := &apiextv1.ConversionReview{}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatal(err)
	}
	return out
}

func readMetric(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// A body larger than the apiserver can send is refused with 413, whether or not it announces its
// length; what the apiserver can send is converted.
func TestWebhookRefusesBodiesLargerThanTheAPIServerSends(t *testing.T) {
	srv := httptest.NewServer(Handler(logr.Discard()))
	defer srv.Close()
	oversized := reviewOf("specs.smi-spec.io/v1alpha4", routeGroupWithHeaders(MaxReviewBytes+1))
	for _, chunked := range []bool{false, true} {
		if a := post(t, srv.URL, oversized, chunked); a.code != http.StatusRequestEntityTooLarge {
			t.Errorf("%d bytes (chunked %v): HTTP %d %s, want 413", len(oversized), chunked, a.code, a.msg)
		}
	}
	largest := reviewOf("specs.smi-spec.io/v1alpha4", routeGroupWithHeaders(MaxObjectBytes-1024))
	if a := post(t, srv.URL, largest, true); a.code != http.StatusOK || a.status != metav1.StatusSuccess {
		t.Errorf("%d bytes: HTTP %d %s, want a successful conversion", len(largest), a.code, a.msg)
	}
}

// Hostile objects get a clean error (400 for JSON the apiserver never sends, a failed
// ConversionReview for an object too costly to decode); legal ones nested deep where the conversion
// does not look are converted and kept as they were.
func TestWebhookHostileObjects(t *testing.T) {
	srv := httptest.NewServer(Handler(logr.Discard()))
	defer srv.Close()
	nested := func(depth int) string {
		return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	}
	manyBackends := `{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit","metadata":{"name":"s","namespace":"n"},"spec":{"service":"root","backends":[` +
		strings.Repeat(`{},`, 2*maxValues) + `{}]}}`
	deepInHeaders := `{"apiVersion":"specs.smi-spec.io/v1alpha2","kind":"HTTPRouteGroup","metadata":{"name":"r","namespace":"n"},"matches":[{"name":"m","headers":` + nested(5000) + `}]}`
	for name, tc := range map[string]struct {
		body       []byte
		code       int
		status     string
		msgContain string
	}{
		"nested beyond any JSON decoder's limit": {body: reviewOf("split.smi-spec.io/v1alpha4",
			`{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit","metadata":{"name":"s"},"spec":`+nested(20000)+`}`), code: http.StatusBadRequest},
		"more values than a conversion decodes": {body: reviewOf("split.smi-spec.io/v1alpha4", manyBackends),
			code: http.StatusOK, status: metav1.StatusFailure, msgContain: "more than"},
		"not JSON":   {body: []byte(`{"request":`), code: http.StatusBadRequest},
		"no request": {body: []byte(`{"kind":"ConversionReview"}`), code: http.StatusBadRequest},
		"nested deep in headers": {body: reviewOf("specs.smi-spec.io/v1alpha4", deepInHeaders),
			code: http.StatusOK, status: metav1.StatusSuccess},
	} {
		a := post(t, srv.URL, tc.body, false)
		if a.code != tc.code || a.status != tc.status || !strings.Contains(a.msg, tc.msgContain) {
			t.Errorf("%s: HTTP %d %q (%.200s), want HTTP %d %q mentioning %q", name, a.code, a.status, a.msg, tc.code, tc.status, tc.msgContain)
		}
	}
	// Kept exactly: read back in v1alpha2 after a round trip through v1alpha1 (which has no headers).
	v1 := fullReview(t, srv.URL, reviewOf("specs.smi-spec.io/v1alpha1", deepInHeaders))
	if v1.Response.Result.Status != metav1.StatusSuccess {
		t.Fatalf("to v1alpha1: %s", v1.Response.Result.Message)
	}
	back := fullReview(t, srv.URL, reviewOf("specs.smi-spec.io/v1alpha2", string(v1.Response.ConvertedObjects[0].Raw)))
	if !equal(decoded(t, back.Response.ConvertedObjects[0].Raw)["matches"], decoded(t, []byte(deepInHeaders))["matches"]) {
		t.Errorf("headers nested 5000 deep did not survive v1alpha2 -> v1alpha1 -> v1alpha2")
	}
}

// A legal 1.4 MiB HTTPRouteGroup of many small headers is converted (and kept) with heap
// allocations of a small multiple of its size, in both directions: to the hub, and to v1alpha1,
// which keeps the headers in the conversion annotation. (Decoded whole, it took about 70 times its
// size, 99 MiB, per conversion.)
func TestWebhookConvertsLargeHeadersWithBoundedAllocation(t *testing.T) {
	srv := httptest.NewServer(Handler(logr.Discard()))
	defer srv.Close()
	obj := routeGroupWithHeaders(1400 << 10)
	for _, to := range []string{"specs.smi-spec.io/v1alpha4", "specs.smi-spec.io/v1alpha1"} {
		body := reviewOf(to, obj)
		out := fullReview(t, srv.URL, body)
		if out.Response.Result.Status != metav1.StatusSuccess {
			t.Fatalf("to %s: %s", to, out.Response.Result.Message)
		}
		if to == "specs.smi-spec.io/v1alpha4" {
			if got := field(t, out.Response.ConvertedObjects[0].Raw, "spec", "matches", "0", "headers", "h12345"); got != "v" {
				t.Errorf("headers not kept: h12345 = %v", got)
			}
		}
		runtime.GC()
		before := readMetric("/gc/heap/allocs:bytes")
		const rounds = 5
		for range rounds {
			if a := post(t, srv.URL, body, false); a.status != metav1.StatusSuccess {
				t.Fatalf("to %s: HTTP %d %s", to, a.code, a.msg)
			}
		}
		perByte := float64(readMetric("/gc/heap/allocs:bytes")-before) / rounds / float64(len(body))
		t.Logf("to %s: %.1f bytes allocated per byte of ConversionReview (client included)", to, perByte)
		if perByte > 5 {
			t.Errorf("to %s: %.1f bytes allocated per byte of a %d-byte ConversionReview, want at most 5", to, perByte, len(body))
		}
	}
}

// Many clients at once sending the largest and the costliest bodies: each gets a clean answer
// (converted, a failed ConversionReview, 413 or 429) and the heap stays bounded, whatever the
// number of clients: at most Limits.Concurrent reviews are read and converted at a time.
func TestWebhookHeapStaysBoundedUnderConcurrentHostileLoad(t *testing.T) {
	srv := httptest.NewServer(Handler(logr.Discard()))
	defer srv.Close()
	bodies := [][]byte{
		reviewOf("specs.smi-spec.io/v1alpha4", routeGroupWithHeaders(1400<<10)),
		reviewOf("specs.smi-spec.io/v1alpha1", routeGroupWithHeaders(1400<<10)),
		reviewOf("specs.smi-spec.io/v1alpha4", routeGroupWithHeaders(MaxObjectBytes-1024)),
		reviewOf("split.smi-spec.io/v1alpha4", `{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit","metadata":{"name":"s","namespace":"n"},"spec":{"service":"root","backends":[`+
			strings.Repeat(`{},`, 2*maxValues)+`{}]}}`),
		reviewOf("specs.smi-spec.io/v1alpha4", routeGroupWithHeaders(2*MaxReviewBytes)),
		reviewOf("split.smi-spec.io/v1alpha4", smallSplit),
	}
	runtime.GC()
	baseline := readMetric("/memory/classes/heap/objects:bytes")
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := readMetric("/memory/classes/heap/objects:bytes"); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
		}
	}()
	const clients, rounds = 16, 2
	var mu sync.Mutex
	codes := map[string]int{}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for r := range rounds {
				i := (c + r) % len(bodies)
				a := post(t, srv.URL, bodies[i], (c+r)%2 == 0)
				key := fmt.Sprintf("%d %s", a.code, a.status)
				mu.Lock()
				codes[key]++
				mu.Unlock()
				switch {
				case a.code == http.StatusOK && a.status != "":
				case a.code == http.StatusRequestEntityTooLarge, a.code == http.StatusTooManyRequests:
				default:
					t.Errorf("body %d: HTTP %d %.200s: not a clean answer", i, a.code, a.msg)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	grew := float64(peak.Load()-min(peak.Load(), baseline)) / (1 << 20)
	t.Logf("answers %v; heap objects peaked %.1f MiB above the %.1f MiB before", codes, grew, float64(baseline)/(1<<20))
	if codes["200 Success"] == 0 {
		t.Error("nothing was converted")
	}
	// Two slots, each holding a review of at most MaxReviewBytes, its copy and its decoded parts
	// (about 15 MiB together), plus the garbage of finished ones not yet collected: GOGC=100 lets the
	// heap reach twice what was live at the last collection, the test's own 12 MiB included.
	if limit := 64.0; grew > limit {
		t.Errorf("heap objects grew by %.1f MiB under %d concurrent clients, want at most %.0f MiB", grew, clients, limit)
	}
}

// holdSlot starts a review whose body comes only when release is called: it holds its slot until
// then. The answer arrives on the returned channel.
func holdSlot(t *testing.T, url string, body []byte) (release func(), answered <-chan answer) {
	t.Helper()
	pr, pw := io.Pipe()
	out := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, url, pr)
		req.ContentLength = int64(len(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- answer{code: -1, msg: err.Error()}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		msg, _ := io.ReadAll(resp.Body)
		out <- answer{code: resp.StatusCode, msg: string(msg)}
	}()
	if _, err := pw.Write(body[:10]); err != nil {
		t.Fatal(err)
	}
	return func() {
		_, _ = pw.Write(body[10:])
		_ = pw.Close()
	}, out
}

// admitted waits until n reviews are admitted (converting or waiting for a slot).
func admitted(t *testing.T, h http.Handler, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); len(h.(*handler).queue) != n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d reviews admitted, want %d", len(h.(*handler).queue), n)
		}
	}
}

// Reviews beyond the slots and the queue are refused with 429 before their body is read, and so
// is one that waits longer than Limits.Wait; the slot of a review being read is held until it is
// answered, then the next one waiting takes it.
func TestWebhookBoundsConcurrency(t *testing.T) {
	body := reviewOf("split.smi-spec.io/v1alpha4", smallSplit)

	h := NewHandler(logr.Discard(), Limits{MaxBodyBytes: MaxReviewBytes, Concurrent: 1, Queued: 1, Wait: time.Minute, ReadTimeout: time.Minute})
	srv := httptest.NewServer(h)
	defer srv.Close()
	release, first := holdSlot(t, srv.URL, body)
	admitted(t, h, 1)
	second := make(chan answer, 1)
	go func() { second <- post(t, srv.URL, body, false) }()
	admitted(t, h, 2)
	if third := post(t, srv.URL, body, false); third.code != http.StatusTooManyRequests || !strings.Contains(third.msg, "waiting") {
		t.Errorf("with the slot taken and the queue full: HTTP %d %s, want 429", third.code, third.msg)
	}
	release()
	if a := <-first; a.code != http.StatusOK || !strings.Contains(a.msg, `"status":"Success"`) {
		t.Errorf("the slow review: HTTP %d %s", a.code, a.msg)
	}
	if a := <-second; a.status != metav1.StatusSuccess {
		t.Errorf("the review that waited: HTTP %d %s, want converted once the slot is free", a.code, a.msg)
	}

	h = NewHandler(logr.Discard(), Limits{MaxBodyBytes: MaxReviewBytes, Concurrent: 1, Queued: 1, Wait: 200 * time.Millisecond, ReadTimeout: time.Minute})
	short := httptest.NewServer(h)
	defer short.Close()
	release, first = holdSlot(t, short.URL, body)
	admitted(t, h, 1)
	if a := post(t, short.URL, body, false); a.code != http.StatusTooManyRequests || !strings.Contains(a.msg, "no slot free") {
		t.Errorf("waiting longer than Limits.Wait: HTTP %d %s, want 429", a.code, a.msg)
	}
	release()
	if a := <-first; a.code != http.StatusOK {
		t.Errorf("the slow review: HTTP %d %s", a.code, a.msg)
	}
}

// BenchmarkConvertLargeHeaders reports heap bytes allocated per byte of object converting a legal
// 1.4 MiB HTTPRouteGroup of small headers.
func BenchmarkConvertLargeHeaders(b *testing.B) {
	obj := []byte(routeGroupWithHeaders(1400 << 10))
	for _, to := range []string{"specs.smi-spec.io/v1alpha4", "specs.smi-spec.io/v1alpha1"} {
		b.Run(to, func(b *testing.B) {
			before := readMetric("/gc/heap/allocs:bytes")
			for b.Loop() {
				if _, err := Convert(obj, to); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(readMetric("/gc/heap/allocs:bytes")-before)/float64(b.N)/float64(len(obj)), "alloc-bytes/object-byte")
		})
	}
}

// BenchmarkReviewOneObject reports what the handler allocates answering a review of one small
// object, the review the apiserver sends for each object it converts on a write or a watch event.
func BenchmarkReviewOneObject(b *testing.B) {
	body := reviewOf("split.smi-spec.io/v1alpha4", smallSplit)
	h := NewHandler(logr.Discard(), Limits{MaxBodyBytes: MaxReviewBytes, Concurrent: 1, Queued: 1, Wait: time.Minute})
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/convert", bytes.NewReader(body)))
		if w.Code != http.StatusOK || !bytes.Contains(w.Body.Bytes(), []byte(`"status":"Success"`)) {
			b.Fatalf("HTTP %d %s", w.Code, w.Body.String())
		}
	}
}

// failingWriter accepts n bytes, then fails (a client that went away mid-answer).
type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, io.ErrClosedPipe
	}
	f.n -= len(p)
	return len(p), nil
}

// The streamed answer (writeReview, through reused buffers) carries exactly what Review builds
// with appendJSON, which uses no reused buffer: for several objects, an annotation string longer
// than a flush (v1alpha1 keeps the headers there), a raw value larger than the buffer, and a
// failure; from 8 goroutines at once, and after an answer cut short by a failing writer. The
// buffers given back are empty and of their size.
func TestWriteReviewMatchesReview(t *testing.T) {
	request := func(to string, objects ...string) *apiextv1.ConversionRequest {
		req := &apiextv1.ConversionRequest{UID: "u1", DesiredAPIVersion: to}
		for _, o := range objects {
			req.Objects = append(req.Objects, kruntime.RawExtension{Raw: []byte(o)})
		}
		return req
	}
	manyBackends := `{"apiVersion":"split.smi-spec.io/v1alpha2","kind":"TrafficSplit","metadata":{"name":"s","namespace":"n"},"spec":{"service":"root","backends":[` +
		strings.Repeat(`{},`, 2*maxValues) + `{}]}}`
	cases := map[string]*apiextv1.ConversionRequest{
		"three objects, annotations over 16 KiB": request("specs.smi-spec.io/v1alpha1",
			routeGroupWithHeaders(40<<10), routeGroupWithHeaders(1<<10), routeGroupWithHeaders(40<<10)),
		"a raw value over 32 KiB": request("specs.smi-spec.io/v1alpha4", routeGroupWithHeaders(100<<10)),
		"a failure":               request("split.smi-spec.io/v1alpha4", manyBackends),
	}
	check := func(name string, req *apiextv1.ConversionRequest) error {
		want := Review(req)
		converted, result := convertAll(req)
		var buf bytes.Buffer
		if err := writeReview(&buf, metav1.TypeMeta{}, req.UID, result, converted); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !json.Valid(buf.Bytes()) || !bytes.HasSuffix(buf.Bytes(), []byte("}}\n")) {
			return fmt.Errorf("%s: not one JSON object ending in }}\\n: %.200s", name, buf.String())
		}
		var got apiextv1.ConversionReview
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			return fmt.Errorf("%s: decode: %w", name, err)
		}
		if got.Response == nil {
			return fmt.Errorf("%s: no response", name)
		}
		if got.Response.UID != req.UID || got.Response.Result.Status != want.Result.Status || got.Response.Result.Message != want.Result.Message {
			return fmt.Errorf("%s: uid %q result %+v, want %q %+v", name, got.Response.UID, got.Response.Result, req.UID, want.Result)
		}
		if len(got.Response.ConvertedObjects) != len(want.ConvertedObjects) {
			return fmt.Errorf("%s: %d objects, want %d", name, len(got.Response.ConvertedObjects), len(want.ConvertedObjects))
		}
		for i := range want.ConvertedObjects {
			if !bytes.Equal(got.Response.ConvertedObjects[i].Raw, want.ConvertedObjects[i].Raw) {
				return fmt.Errorf("%s: object %d differs from Review's", name, i)
			}
		}
		return nil
	}
	if Review(cases["a failure"]).Result.Status != metav1.StatusFailure {
		t.Fatal("the failure case converts: it tests nothing")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8*3*5)
	for range 8 {
		wg.Go(func() {
			for range 5 {
				for name, req := range cases {
					if err := check(name, req); err != nil {
						errs <- err
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	req := cases["three objects, annotations over 16 KiB"]
	converted, result := convertAll(req)
	if err := writeReview(&failingWriter{n: 20 << 10}, metav1.TypeMeta{}, req.UID, result, converted); err == nil {
		t.Error("a writer failing after 20 KiB: no error")
	}
	if err := check("after a failed answer", req); err != nil {
		t.Error(err)
	}
	for range 16 {
		bp := buffers.Get().(*[]byte)
		if len(*bp) != 0 || cap(*bp) != bufferBytes {
			t.Errorf("a buffer given back holds %d bytes of %d, want 0 of %d", len(*bp), cap(*bp), bufferBytes)
		}
		defer buffers.Put(bp)
	}
}
