// Boost.JSON compiled from its sources, for the portable build only (CMakeLists.txt says
// why); the other builds link Debian's libboost_json.
#include <boost/json/src.hpp>
