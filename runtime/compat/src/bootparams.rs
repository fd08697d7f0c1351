//! `bootparams`: SmartOS prints the boot parameters as `key=value` lines;
//! here they are the `key=value` words of the kernel command line (quotes
//! removed as the kernel removes them), in order. Words without `=` are
//! flags, not parameters, and are left out.

use boot_params::Cmdline;

/// Where the command line is read from.
pub const DEFAULT_CMDLINE: &str = "/proc/cmdline";
/// Environment variable naming another file to read (for tests).
pub const CMDLINE_ENV: &str = "BOOTPARAMS_CMDLINE";

/// One `key=value` line per parameter of `cmdline`.
pub fn render(cmdline: &str) -> String {
    let mut out = String::new();
    for (k, v) in Cmdline::parse(cmdline).iter() {
        if let Some(v) = v {
            out.push_str(k);
            out.push('=');
            out.push_str(v);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_value_word_in_order() {
        let line = "BOOT_IMAGE=/vmlinuz console=ttyS0,115200n8 console=tty0 quiet \
                    ip=10.0.0.5::10.0.0.1:255.255.255.0:cn1:eth0:none admin_nic=aa:bb:cc:dd:ee:ff \
                    aggr1_aggr=\"aa:bb,cc:dd\" headnode=false empty= triton.noimport\n";
        assert_eq!(
            render(line),
            "BOOT_IMAGE=/vmlinuz\nconsole=ttyS0,115200n8\nconsole=tty0\n\
             ip=10.0.0.5::10.0.0.1:255.255.255.0:cn1:eth0:none\nadmin_nic=aa:bb:cc:dd:ee:ff\n\
             aggr1_aggr=aa:bb,cc:dd\nheadnode=false\nempty=\n"
        );
    }

    #[test]
    fn value_keeps_later_equals() {
        assert_eq!(render("rabbitmq=guest:guest:10.0.0.2:5672 a=b=c"), "rabbitmq=guest:guest:10.0.0.2:5672\na=b=c\n");
        assert_eq!(render(""), "");
        assert_eq!(render("quiet splash"), "");
    }
}
