/*
 * bcryptprimitives.dll for wine 8.0, which lacks it (docs/platforms.md,
 * "Windows"). Every Rust >= 1.78 Windows binary imports
 * bcryptprimitives!ProcessPrng for its random numbers; without it wine
 * refuses to start the executable (status 53, nothing printed). This
 * stand-in fills the buffer from RtlGenRandom (advapi32!SystemFunction036).
 * Built with mingw-w64 by `cargo xtask test` into the test WINEPREFIX only;
 * never shipped, never used on real Windows (which has the real DLL).
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
