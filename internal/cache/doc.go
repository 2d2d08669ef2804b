// Package cache is the operator's informer cache: its options, transforms, compact types and indexes.
// +kubebuilder:skip
package cache
