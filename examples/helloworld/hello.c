/* helloworld: the first app of every environment — a greeting and its argv. */
#include <stdio.h>

int main(int argc, char *argv[])
{
	printf("Hello from unirealm! argc=%d\n", argc);
	for (int i = 0; i < argc; i++)
		printf("  argv[%d] = %s\n", i, argv[i]);
	return 0;
}
