package main

import (
	"testing"
	"time"
)

// Each adjacent pair of turns is one ratio of this build over the other, whichever came first.
func TestCompareRatiosPairsAdjacentTurns(t *testing.T) {
	turns := []turn{
		{build: "old", wall: 100 * time.Second, cpu: 200},
		{build: "this", wall: 90 * time.Second, cpu: 190},
		{build: "old", wall: 120 * time.Second, cpu: 250},
		{build: "this", wall: 96 * time.Second, cpu: 200},
	}
	got := compareRatios(turns)
	want := "0.900× / 0.950×, 0.750× / 0.760×, 0.800× / 0.800×; mean 0.817× / 0.837×"
	if got != want {
		t.Fatalf("compareRatios = %q, want %q", got, want)
	}
	if got := compareRatios(turns[:1]); got != "none" {
		t.Fatalf("one turn: %q, want none", got)
	}
}
