//! Triton networking: plan (desired from triton-networking.json vs observed) and apply through rtnetlink
