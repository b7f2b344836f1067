// WFI with no timer armed, no device and no other CPU: nothing can ever end it.
    .text
    .global _start
_start:
    msr daifclr, #2
1:  wfi
    b 1b
