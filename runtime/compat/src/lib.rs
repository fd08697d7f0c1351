//! Commands the headnode's setup scripts call on a Linux CN: json, bootparams, zonename, systemctl
