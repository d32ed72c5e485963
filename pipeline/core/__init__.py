"""Foundation: records, manifests, errors, devices, file I/O, names and the registry; imports no other room."""
