// libxdp's XDP_RUN_CONFIG convention, for objects built without libxdp:
// a struct variable `_<prog>` in section .xdp_run_config whose members carry
// their values as array lengths (BTF keeps them).
#define _CONCAT(x, y) x##y
#define XDP_RUN_CONFIG(f) _CONCAT(_, f) SEC(".xdp_run_config")
