# Tests against PyTorch references. The fixtures in tests/fixtures are written by
# tests/gen_fixtures.py (/usr/bin/python3 tests/gen_fixtures.py) and committed;
# each test takes the fixture directory as its argument.
add_library(md_fixture STATIC fixture.c)
target_link_libraries(md_fixture PUBLIC md_testutil)

md_test(test_ops_torch ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
target_link_libraries(test_ops_torch PRIVATE md_fixture)

md_test(test_tiny_net ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
target_link_libraries(test_tiny_net PRIVATE md_fixture)

md_test(test_supernet ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
target_link_libraries(test_supernet PRIVATE md_fixture)
