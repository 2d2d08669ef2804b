// Package foreigncrds tests the operator with another installer's SMI CRDs kept as they are
// (--smi-crds=foreign): Open Service Mesh 1.2's, which serve TrafficSplit only as v1alpha2, have no
// status subresource and no UDPRoute CRD. The SMI kinds' versions are process-wide
// (controllers.UseSMIKinds), hence a package of its own, with its own control plane.
package foreigncrds
