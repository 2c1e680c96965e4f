// Boost.URL, compiled into the agent from its sources: Debian's libboost-url1.81-dev holds
// only the library files, and the portable build has Boost's headers alone.
#include <boost/url/src.hpp>
