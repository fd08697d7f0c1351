/* Input of bindgen for zfs-sys (see regen.sh). Headers of Debian trixie's libzfslinux-dev. */
#include <libzfs.h>
#include <libzutil.h>
#include <libnvpair.h>
