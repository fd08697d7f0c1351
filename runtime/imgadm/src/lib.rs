//! imgadm: image sources configuration (and, later, image import) for a Linux CN
