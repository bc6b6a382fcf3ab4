/* Tiny static x86_64 Linux program for berth test fixtures.
 * No libc: _start performs raw write(2) and exit(2) syscalls.
 * Build: gcc -static -nostdlib -Os -s -fno-asynchronous-unwind-tables \
 *          -Wl,--build-id=none -Wl,-n -o hello-amd64 hello.c
 * (--build-id=none and -n drop the build-id note and page alignment,
 *  shrinking the binary from ~8.7 KB to 640 bytes.)
 */
static const char msg[] = "hello from berth\n";

void _start(void)
{
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(1L), "D"(1L), "S"(msg), "d"(sizeof(msg) - 1)
                     : "rcx", "r11", "memory");
    __asm__ volatile("syscall"
                     :
                     : "a"(60L), "D"(0L)
                     : "rcx", "r11", "memory");
    for (;;) {
    }
}
