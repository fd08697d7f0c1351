//! ur-agent: the AMQP agent through which the headnode reaches a CN (sysinfo, ping, execute)
