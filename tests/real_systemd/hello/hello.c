/* The upstream program the real_systemd test builds under the unit's
 * sandbox with make and cc. */
#include <stdio.h>

int main(void)
{
    puts("hello from farmhand");
    return 0;
}
