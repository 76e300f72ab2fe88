using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("Optim.Tests")]
[assembly: InternalsVisibleTo("Optim.Bench")]
