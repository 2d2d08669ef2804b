package translate

// TypedOutput exposes typedOutput to the external tests: the decoding of what the controllers
// validate (unstructured objects).
var TypedOutput = typedOutput
