//! disklayout and mkzpool: choose the zones pool layout from the disks present and create it
